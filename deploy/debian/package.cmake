# Debian packages with CPack (`cpack -G DEB` in the build directory, or the
# `deb` target): muster (muster, musterctl, the unit, /etc/default/muster)
# and muster-discovery (the discovery service, its unit and defaults), laid
# out like Debian's etcd-server and etcd-discovery packages.  Included from
# the top-level CMakeLists.txt; tests/integration/deb installs them.
include(GNUInstallDirs)

set(MUSTER_DEB_DIR ${CMAKE_CURRENT_LIST_DIR})

install(TARGETS muster musterctl RUNTIME DESTINATION bin COMPONENT member)
install(TARGETS muster-discovery RUNTIME DESTINATION bin COMPONENT discovery)
# Stripped of debug information but not of the symbol table: the member's
# /debug/pprof/symbol names its functions from it (net/symbols.h), which is
# how `go tool pprof` on an operator's machine shows names, as it does for
# etcd (a Go binary keeps its function table).  It costs 3.5 MB of the
# member's 9.4 MB.  So CPack's own stripping (everything) is off below.
foreach(prog_comp muster:member musterctl:member muster-discovery:discovery)
  string(REPLACE ":" ";" pc ${prog_comp})
  list(GET pc 0 prog)
  list(GET pc 1 comp)
  install(CODE "execute_process(COMMAND ${CMAKE_STRIP} --strip-debug
                  \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/bin/${prog}\"
                  COMMAND_ERROR_IS_FATAL ANY)"
          COMPONENT ${comp})
endforeach()
install(FILES ${MUSTER_DEB_DIR}/muster.service DESTINATION /lib/systemd/system COMPONENT member)
install(FILES ${MUSTER_DEB_DIR}/muster.default DESTINATION /etc/default RENAME muster
        COMPONENT member)
install(FILES ${MUSTER_DEB_DIR}/muster-discovery.service DESTINATION /lib/systemd/system
        COMPONENT discovery)
install(FILES ${MUSTER_DEB_DIR}/muster-discovery.default DESTINATION /etc/default
        RENAME muster-discovery COMPONENT discovery)
install(FILES ${CMAKE_SOURCE_DIR}/README.md ${CMAKE_SOURCE_DIR}/docs/operations.md
              ${CMAKE_SOURCE_DIR}/docs/configuration.md
        DESTINATION share/doc/muster COMPONENT member)
install(FILES ${CMAKE_SOURCE_DIR}/docs/discovery.md DESTINATION share/doc/muster-discovery
        COMPONENT discovery)

# Maintainer scripts and conffiles, per package.
foreach(comp member discovery)
  if(comp STREQUAL member)
    set(PKG muster)
  else()
    set(PKG muster-discovery)
  endif()
  set(USER ${PKG})
  set(HOME /var/lib/${PKG})
  set(dir ${CMAKE_BINARY_DIR}/deb-control/${comp})
  foreach(script postinst prerm postrm)
    configure_file(${MUSTER_DEB_DIR}/${script}.in ${dir}/${script} @ONLY
                   FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ
                                    GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
  endforeach()
  file(WRITE ${dir}/conffiles "/etc/default/${PKG}\n")
  string(TOUPPER ${comp} COMP)
  set(CPACK_DEBIAN_${COMP}_PACKAGE_CONTROL_EXTRA
      ${dir}/postinst ${dir}/prerm ${dir}/postrm ${dir}/conffiles)
  set(CPACK_DEBIAN_${COMP}_PACKAGE_NAME ${PKG})
  set(CPACK_DEBIAN_${COMP}_FILE_NAME DEB-DEFAULT)
endforeach()
set(CPACK_DEBIAN_MEMBER_PACKAGE_SECTION database)
set(CPACK_DEBIAN_DISCOVERY_PACKAGE_SECTION net)
set(CPACK_COMPONENT_MEMBER_DESCRIPTION
    "etcd-compatible key-value store member (muster, musterctl)\n Muster forms and runs small, strongly consistent clusters the way etcd\n operators do: etcd 3.4's flags, ETCD_* variables, HTTP paths, gRPC API and\n metrics.  This package has the member, its command-line client, a systemd\n unit and /etc/default/muster.")
set(CPACK_COMPONENT_DISCOVERY_DESCRIPTION
    "etcd discovery service (muster-discovery)\n A discovery service etcd and muster members bootstrap through, as with\n discovery.etcd.io: tokens with a size, registrations, full-cluster answers.")

set(CPACK_GENERATOR DEB)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL member discovery)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "Muster maintainers <muster@localhost>")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "Muster maintainers <muster@localhost>")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "systemd")
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "file:///usr/share/doc/muster/README.md")
set(CPACK_STRIP_FILES OFF)  # see the install(CODE) above
set(CPACK_WARN_ON_ABSOLUTE_INSTALL_DESTINATION OFF)
set(CPACK_PACKAGE_DIRECTORY ${CMAKE_BINARY_DIR}/deb)
include(CPack)

# `ninja deb`: builds the programs, then both packages into build/deb/.
add_custom_target(deb COMMAND ${CMAKE_CPACK_COMMAND} -G DEB --config
                              ${CMAKE_BINARY_DIR}/CPackConfig.cmake
                  WORKING_DIRECTORY ${CMAKE_BINARY_DIR}
                  DEPENDS muster musterctl muster-discovery
                  COMMENT "Building the Debian packages into ${CMAKE_BINARY_DIR}/deb")
