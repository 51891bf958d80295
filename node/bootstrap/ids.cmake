# Member and cluster IDs as etcd computes them (node/bootstrap/ids.h).
# Included from node/CMakeLists.txt, so paths are relative to node/.
add_library(muster_ids STATIC ${CMAKE_CURRENT_LIST_DIR}/ids.cpp)
target_link_libraries(muster_ids PUBLIC OpenSSL::Crypto)
