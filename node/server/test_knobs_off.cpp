// The production build: every test knob (test_knobs.h) is off.  Keep this
// file to these definitions only, so that muster-broken's definitions replace
// it at link time.
#include "node/server/test_knobs.h"

namespace muster::server::test_knobs {

bool serve_reads_locally() { return false; }
bool drop_watch_event() { return false; }

}  // namespace muster::server::test_knobs
