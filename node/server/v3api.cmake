# The member's v3 API: the transport-independent service
# (node/server/v3_service.h), the JSON gateway with /health, /version and
# /metrics (node/server/v3_api.h) and the gRPC adapter
# (node/server/v3_grpc.h).  Included from node/server/CMakeLists.txt.
add_library(muster_v3api STATIC ${CMAKE_CURRENT_LIST_DIR}/v3_service.cpp
                                ${CMAKE_CURRENT_LIST_DIR}/v3_api.cpp
                                ${CMAKE_CURRENT_LIST_DIR}/v3_grpc.cpp
                                ${CMAKE_CURRENT_LIST_DIR}/grpc_metrics.cpp
                                ${CMAKE_CURRENT_LIST_DIR}/password.cpp
                                ${CMAKE_CURRENT_LIST_DIR}/jwt.cpp
                                ${CMAKE_CURRENT_LIST_DIR}/test_knobs_off.cpp)
target_link_libraries(muster_v3api PUBLIC muster_net muster_storage muster_apipb
                                          protobuf::libprotobuf nlohmann_json::nlohmann_json
                                          Boost::boost OpenSSL::Crypto crypt)
target_link_libraries(muster_v3api PRIVATE muster_warnings)
