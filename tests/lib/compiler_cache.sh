# Sourced by tests/run.sh and tests/sanitize.sh after they set $root (the
# checkout): ccache, when the machine has it, for both builds.
#
# Paths under the checkout are made relative (CCACHE_BASEDIR) and the build
# directory is left out of the hash (CCACHE_NOHASHDIR; it only changes the
# directory recorded in the debug info), so a clean clone anywhere -- CI's --
# reuses what an earlier build of the same sources compiled, in any other
# clone.  Without ccache the builds are as before.  Either variable can be
# set beforehand to override.
ccache_flags=()
if command -v ccache >/dev/null; then
  export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$root}"
  export CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"
  ccache_flags=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi
