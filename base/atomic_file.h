// base/atomic_file.h: files a program must find either whole or not at all
// after a crash (a member's identity, a proxy's cluster file, generated
// certificates).
//
// The contents go to `<path>.tmp`, which is fsynced, renamed over `path`,
// and then the directory is fsynced so the rename itself is durable.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

namespace muster::base {

// Returns "" on success, else a sentence naming the file and the error.
std::string write_file_atomically(const std::string& path, std::string_view contents,
                                  mode_t mode = 0600);

// Renames `tmp` (already written and fsynced) over `path` and fsyncs the
// directory.  Returns "" on success, else the error.
std::string commit_file(const std::string& tmp, const std::string& path);

}  // namespace muster::base
