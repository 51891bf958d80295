# Bootstrap through a discovery URL (node/bootstrap/discovery.h).  Included
# from node/CMakeLists.txt, so paths are relative to node/.  musterctl links it
# too (`musterctl discovery`).
add_library(muster_discovery_client STATIC ${CMAKE_CURRENT_LIST_DIR}/discovery.cpp)
target_link_libraries(muster_discovery_client PUBLIC muster_ids muster_config muster_net
                                                     nlohmann_json::nlohmann_json)

# --initial-cluster / --discovery / --discovery-srv -> the initial cluster
# (node/bootstrap/initial_cluster.h), for node/main.
add_library(muster_bootstrap STATIC ${CMAKE_CURRENT_LIST_DIR}/initial_cluster.cpp
                                    ${CMAKE_CURRENT_LIST_DIR}/member_plan.cpp
                                    ${CMAKE_CURRENT_LIST_DIR}/identity.cpp)
target_link_libraries(muster_bootstrap PUBLIC muster_discovery_client muster_dns muster_config
                                              muster_peer_members muster_net)

# What a member serves on GET <peer-url>/members, read by a joining member and
# by the proxy (node/bootstrap/peer_members.h).
add_library(muster_peer_members STATIC ${CMAKE_CURRENT_LIST_DIR}/peer_members.cpp)
target_link_libraries(muster_peer_members PUBLIC muster_ids muster_net nlohmann_json::nlohmann_json)
