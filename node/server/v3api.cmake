# The member's v3 JSON gateway, /health, /version and /metrics
# (node/server/v3_api.h).  Included from node/server/CMakeLists.txt.
add_library(muster_v3api STATIC ${CMAKE_CURRENT_LIST_DIR}/v3_api.cpp)
target_link_libraries(muster_v3api PUBLIC muster_net muster_storage protobuf::libprotobuf
                                          nlohmann_json::nlohmann_json)
