# Peer transport (docs/transport.md): included from node/server/CMakeLists.txt.
protobuf_generate_cpp(MUSTER_TRANSPORTPB_SRCS MUSTER_TRANSPORTPB_HDRS
                      ${CMAKE_CURRENT_LIST_DIR}/transport.proto)
add_library(muster_transport STATIC ${CMAKE_CURRENT_LIST_DIR}/transport.cpp
                                    ${CMAKE_CURRENT_LIST_DIR}/peer.cpp
                                    ${CMAKE_CURRENT_LIST_DIR}/snapshot_stream.cpp
                                    ${MUSTER_TRANSPORTPB_SRCS})
target_include_directories(muster_transport PUBLIC ${CMAKE_CURRENT_BINARY_DIR}
                                                   ${Protobuf_INCLUDE_DIRS})
target_link_libraries(muster_transport PUBLIC muster_net muster_raftpb muster_storage Boost::boost
                                              OpenSSL::SSL protobuf::libprotobuf Threads::Threads)
target_link_libraries(muster_transport PRIVATE muster_warnings)
set_source_files_properties(${MUSTER_TRANSPORTPB_SRCS} PROPERTIES COMPILE_OPTIONS
                                                                  -Wno-unused-parameter)
