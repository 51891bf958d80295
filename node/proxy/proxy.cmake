# node/proxy: the proxy an extra joiner becomes (docs/proxy.md).  Included
# from node/CMakeLists.txt.  Beast is used directly in forwarder.cpp only (an
# asynchronous upstream client; net/'s HttpClient is blocking).
add_library(muster_proxy STATIC
  ${CMAKE_CURRENT_LIST_DIR}/proxy.cpp
  ${CMAKE_CURRENT_LIST_DIR}/forwarder.cpp
  ${CMAKE_CURRENT_LIST_DIR}/grpc_forwarder.cpp
  ${CMAKE_CURRENT_LIST_DIR}/director.cpp
  ${CMAKE_CURRENT_LIST_DIR}/routes.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cluster_file.cpp)
target_link_libraries(muster_proxy PUBLIC muster_net muster_config muster_peer_members
                                          muster_tls_setup
                                          nlohmann_json::nlohmann_json)
