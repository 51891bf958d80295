# Usage requirements shared by Muster's targets.  Each target links the ones
# it needs; nothing here applies to the whole tree, so generated protobuf
# code and third-party sources compile with their own flags.
#
#   muster_includes  includes spelled from the repository root
#                    ("net/http.h"), generated headers likewise
#                    ("node/raft/raft.pb.h"); libraries link it PUBLIC.
#   muster_warnings  -Wall -Wextra for code we write; linked PRIVATE.
#   muster_asio      Boost.Asio as we use it: header-only, no deprecated
#                    names, and Boost 1.74's missing include (below).

add_library(muster_includes INTERFACE)
target_include_directories(muster_includes INTERFACE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})

add_library(muster_warnings INTERFACE)
target_compile_options(muster_warnings INTERFACE -Wall -Wextra)

# Boost 1.74's asio/awaitable.hpp uses std::exchange without including
# <utility>; g++ 12 in C++20 mode no longer pulls it in transitively, so every
# target that includes asio force-includes it.
add_library(muster_asio INTERFACE)
target_link_libraries(muster_asio INTERFACE Boost::boost Threads::Threads)
target_compile_definitions(muster_asio INTERFACE BOOST_ASIO_NO_DEPRECATED)
target_compile_options(muster_asio INTERFACE -include utility)
# Boost 1.74's asio recognises clang's coroutines only through the old
# Coroutines TS; clang 14 in C++20 has the standard ones (and libstdc++ 12
# the <coroutine> header), so say so (the sanitizer and fuzz builds use clang).
if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  target_compile_definitions(muster_asio INTERFACE BOOST_ASIO_HAS_CO_AWAIT=1)
endif()

# muster_protoc(<out-var> <proto relative to the repository root>...): runs
# protoc with the repository root as the import path and appends the
# generated .pb.cc files to <out-var>, so that generated code includes itself
# as "api/etcdserverpb/rpc.pb.h" and protos import "api/...".  Used by api/
# (etcd's client API protos) and node/storage (kv.proto imports them).
function(muster_protoc out)
  set(srcs ${${out}})
  foreach(p IN LISTS ARGN)
    string(REGEX REPLACE "\\.proto$" "" base ${p})
    set(cc ${PROJECT_BINARY_DIR}/${base}.pb.cc)
    set(h ${PROJECT_BINARY_DIR}/${base}.pb.h)
    add_custom_command(
      OUTPUT ${cc} ${h}
      COMMAND protobuf::protoc -I ${PROJECT_SOURCE_DIR} --cpp_out=${PROJECT_BINARY_DIR}
              ${PROJECT_SOURCE_DIR}/${p}
      DEPENDS ${PROJECT_SOURCE_DIR}/${p} protobuf::protoc
      COMMENT "protoc ${p}"
      VERBATIM)
    list(APPEND srcs ${cc})
  endforeach()
  set(${out} ${srcs} PARENT_SCOPE)
endfunction()
