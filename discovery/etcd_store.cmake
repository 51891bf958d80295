# discovery/etcd_store.cmake: the etcd-backed TokenStore (etcd_store.h), a
# library of its own so that the service links it only when it is present.
# Included from discovery/CMakeLists.txt.
add_library(muster_discovery_etcd_store STATIC ${CMAKE_CURRENT_LIST_DIR}/etcd_store.cpp)
target_link_libraries(muster_discovery_etcd_store PUBLIC muster_net nlohmann_json::nlohmann_json)
