#include "tests/sim/sim_cli.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tests/sim/sim.h"

namespace muster::raft::sim {

namespace {
void usage(const char* prog) {
  std::fprintf(stderr,
               "usage: %s [--start S] [--seeds N] [--verbose] [--chaos-ticks T]\n"
               "          [--liveness-ticks T] [--break-vote-twice] [--break-commit-old-terms]\n"
               "          [--break-vote-ignoring-log]\n"
               "          [--storm] [--skip-vote-check] [--expect-failure] [--keep-going]\n",
               prog);
}

bool parse_u64(const char* s, uint64_t* out) {
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (end == s || *end != '\0') return false;
  *out = v;
  return true;
}
}  // namespace

int sim_main(int argc, char** argv) {
  uint64_t start = 1, seeds = 100;
  SimOptions opts;
  bool expect_failure = false;
  bool keep_going = false;
  uint64_t failures = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](uint64_t* out) {
      if (i + 1 >= argc || !parse_u64(argv[i + 1], out)) {
        usage(argv[0]);
        std::exit(2);
      }
      ++i;
    };
    uint64_t v = 0;
    if (a == "--start") {
      value(&start);
    } else if (a == "--seeds") {
      value(&seeds);
    } else if (a == "--chaos-ticks") {
      value(&v);
      opts.chaos_ticks = static_cast<int>(v);
    } else if (a == "--liveness-ticks") {
      value(&v);
      opts.liveness_ticks = static_cast<int>(v);
    } else if (a == "--verbose" || a == "-v") {
      opts.verbose = true;
    } else if (a == "--break-vote-twice") {
      opts.knobs.vote_twice = true;
    } else if (a == "--break-commit-old-terms") {
      opts.knobs.commit_entries_of_older_terms = true;
    } else if (a == "--break-vote-ignoring-log") {
      opts.knobs.vote_ignoring_log = true;
    } else if (a == "--storm") {
      opts.storm = true;
    } else if (a == "--skip-vote-check") {
      opts.skip_vote_check = true;
    } else if (a == "--keep-going") {
      keep_going = true;
    } else if (a == "--expect-failure") {
      expect_failure = true;
    } else {
      usage(argv[0]);
      return 2;
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  SimResult total;
  uint64_t ran = 0;
  for (uint64_t seed = start; seed < start + seeds; ++seed) {
    const SimResult r = run_simulation(seed, opts);
    ++ran;
    total.steps += r.steps;
    total.applied_entries += r.applied_entries;
    total.elections += r.elections;
    total.crashes += r.crashes;
    total.conf_changes += r.conf_changes;
    total.snapshots_installed += r.snapshots_installed;
    total.reads += r.reads;
    total.ticks_to_recover = std::max(total.ticks_to_recover, r.ticks_to_recover);
    if (!r.ok && keep_going) {
      ++failures;
      std::printf("raft-sim FAILED: %s\n", r.failure.c_str());
      continue;
    }
    if (!r.ok) {
      std::printf("raft-sim FAILED: %s\nreplay: %s\n", r.failure.c_str(),
                  replay_command(seed, opts).c_str());
      if (expect_failure) {
        std::printf(
            "(expected: the checker caught the deliberately broken rule after %llu seeds)\n",
            static_cast<unsigned long long>(ran));
        return 0;
      }
      return 1;
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "raft-sim: %llu seeds from %llu passed in %.2fs: %llu steps, %llu client entries applied, "
      "%llu elections, %llu crashes, %llu membership changes, %llu snapshots installed, %llu "
      "linearizable reads checked; slowest recovery after healing: %llu ticks (bound %d + 2 per "
      "entry of backlog)\n",
      static_cast<unsigned long long>(ran), static_cast<unsigned long long>(start), secs,
      static_cast<unsigned long long>(total.steps),
      static_cast<unsigned long long>(total.applied_entries),
      static_cast<unsigned long long>(total.elections),
      static_cast<unsigned long long>(total.crashes),
      static_cast<unsigned long long>(total.conf_changes),
      static_cast<unsigned long long>(total.snapshots_installed),
      static_cast<unsigned long long>(total.reads),
      static_cast<unsigned long long>(total.ticks_to_recover), opts.liveness_ticks);
  if (keep_going) {
    std::printf("raft-sim: %llu of %llu seeds failed\n", static_cast<unsigned long long>(failures),
                static_cast<unsigned long long>(ran));
    return failures == 0 ? 0 : 1;
  }
  if (expect_failure) {
    std::printf("raft-sim: expected a failure (broken rule) but every seed passed\n");
    return 1;
  }
  return 0;
}

}  // namespace muster::raft::sim
