#include "ctl/output.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <ostream>
#include <set>

#include "etcdwire/durations.h"
#include "etcdwire/ids.h"
#include "etcdwire/v3_json.h"

namespace muster::ctl {
namespace {

using json = nlohmann::ordered_json;

// Fields etcd's .proto files declare as 64-bit integers (the gateway writes
// them as strings; etcdctl's Go structs marshal them as numbers).
const std::set<std::string, std::less<>> kInt64Fields = {
    "cluster_id",      "member_id",        "revision", "raft_term",
    "create_revision", "mod_revision",     "version",  "lease",
    "count",           "deleted",          "ID",       "dbSize",
    "leader",          "raftIndex",        "raftTerm", "raftAppliedIndex",
    "dbSizeInUse",     "compact_revision", "watch_id", "TTL",
    "grantedTTL",      "memberID"};

// Field order of etcd's messages (proto declaration order).  Within any one
// message the fields it has appear in this relative order, so one list serves
// them all; fields not listed keep their place after the listed ones.
constexpr std::array kFieldOrder = {"header",       "cluster_id",  "member_id",  "revision",
                                    "raft_term",    "kvs",         "key",        "create_revision",
                                    "mod_revision", "version",     "value",      "lease",
                                    "more",         "count",       "deleted",    "prev_kv",
                                    "prev_kvs",     "member",      "members",    "ID",
                                    "name",         "peerURLs",    "clientURLs", "dbSize",
                                    "leader",       "raftIndex",   "raftTerm",   "raftAppliedIndex",
                                    "errors",       "dbSizeInUse", "isLearner"};

std::size_t field_rank(const std::string& name) {
  for (std::size_t i = 0; i < kFieldOrder.size(); ++i)
    if (name == kFieldOrder[i]) return i;
  return kFieldOrder.size();
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

json convert(const json& v) {
  if (v.is_array()) {
    json out = json::array();
    for (const json& e : v) out.push_back(convert(e));
    return out;
  }
  if (!v.is_object()) return v;
  std::vector<std::pair<std::string, json>> fields;
  for (auto it = v.begin(); it != v.end(); ++it) {
    json value = convert(it.value());
    if (value.is_string() && kInt64Fields.contains(it.key()) &&
        all_digits(value.get<std::string>())) {
      const std::string& s = value.get_ref<const std::string&>();
      uint64_t n = 0;
      const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
      if (ec == std::errc() && end == s.data() + s.size()) value = n;
    }
    fields.emplace_back(it.key(), std::move(value));
  }
  std::stable_sort(fields.begin(), fields.end(), [](const auto& a, const auto& b) {
    return field_rank(a.first) < field_rank(b.first);
  });
  json out = json::object();
  for (auto& [k, value] : fields) out[k] = std::move(value);
  return out;
}

const json& array_field(const json& object, const char* name) {
  static const json kEmpty = json::array();
  auto it = object.find(name);
  return it != object.end() && it->is_array() ? *it : kEmpty;
}

std::string join(const json& strings, std::string_view sep) {
  std::string out;
  for (const json& s : strings) {
    if (!out.empty()) out += sep;
    if (s.is_string()) out += s.get<std::string>();
  }
  return out;
}

// Go's fmt "%16x": hex, space-padded on the left to 16.
std::string padded_hex(uint64_t id) {
  std::string h = etcdwire::id_to_hex(id);
  return std::string(h.size() < 16 ? 16 - h.size() : 0, ' ') + h;
}

std::string cluster_id_of(const json& response) {
  auto h = response.find("header");
  return padded_hex(h != response.end() ? etcdwire::json_u64(*h, "cluster_id") : 0);
}

}  // namespace

json to_etcdctl_json(const json& gateway) { return convert(gateway); }

std::string bytes_field(const json& object, const char* name) {
  return etcdwire::json_bytes(object, name).value_or("");
}

std::string humanize_bytes(uint64_t n) {
  if (n < 10) return std::to_string(n) + " B";
  static constexpr std::array<const char*, 7> kUnits = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
  const double e = std::floor(std::log(static_cast<double>(n)) / std::log(1000.0));
  const std::size_t unit = std::min<std::size_t>(static_cast<std::size_t>(e), kUnits.size() - 1);
  const double value =
      std::floor(static_cast<double>(n) / std::pow(1000.0, static_cast<double>(unit)) * 10 + 0.5) /
      10;
  char buf[64];
  std::snprintf(buf, sizeof buf, value < 10 ? "%.1f %s" : "%.0f %s", value, kUnits[unit]);
  return buf;
}

std::string render_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows) {
  // Widths in characters as a terminal shows them: count UTF-8 lead bytes.
  const auto width = [](const std::string& s) {
    return static_cast<std::size_t>(
        std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
  };
  std::vector<std::size_t> widths(header.size());
  for (std::size_t i = 0; i < header.size(); ++i) widths[i] = width(header[i]);
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size() && i < widths.size(); ++i)
      widths[i] = std::max(widths[i], width(row[i]));
  std::string rule = "+";
  for (std::size_t w : widths) rule += std::string(w + 2, '-') + "+";
  rule += "\n";
  std::string out = rule + "|";
  for (std::size_t i = 0; i < header.size(); ++i) {
    const std::size_t pad = widths[i] - width(header[i]);
    out += " " + std::string(pad / 2, ' ') + header[i] + std::string(pad - pad / 2, ' ') + " |";
  }
  out += "\n" + rule;
  for (const auto& row : rows) {
    out += "|";
    for (std::size_t i = 0; i < widths.size(); ++i) {
      const std::string cell = i < row.size() ? row[i] : "";
      out += " " + std::string(widths[i] - width(cell), ' ') + cell + " |";
    }
    out += "\n";
  }
  if (!rows.empty()) out += rule;
  return out;
}

namespace {

// A key line, then a value line (an empty one for --keys-only or an empty
// value), as etcdctl's simple printer writes a KeyValue.
void print_kv(std::ostream& out, const json& kv) {
  out << bytes_field(kv, "key") << "\n" << bytes_field(kv, "value") << "\n";
}

// put, get and del: the simple form, or the response as etcdctl's JSON; no
// table.
template <class Simple>
bool simple_or_json(const json& response, OutputFormat format, std::ostream& out, Simple simple) {
  switch (format) {
    case OutputFormat::kSimple:
      simple();
      return true;
    case OutputFormat::kJson:
      out << json_text(to_etcdctl_json(response)) << "\n";
      return true;
    case OutputFormat::kTable:
      return false;
  }
  return false;
}

}  // namespace

bool print_put(const json& response, OutputFormat format, std::ostream& out) {
  return simple_or_json(response, format, out, [&] {
    out << "OK\n";
    if (auto p = response.find("prev_kv"); p != response.end()) print_kv(out, *p);
  });
}

bool print_get(const json& response, OutputFormat format, std::ostream& out) {
  return simple_or_json(response, format, out, [&] {
    for (const json& kv : array_field(response, "kvs")) print_kv(out, kv);
  });
}

bool print_del(const json& response, OutputFormat format, std::ostream& out) {
  return simple_or_json(response, format, out, [&] {
    out << etcdwire::json_u64(response, "deleted") << "\n";
    for (const json& kv : array_field(response, "prev_kvs")) print_kv(out, kv);
  });
}

bool print_watch(const json& result, OutputFormat format, std::ostream& out) {
  switch (format) {
    case OutputFormat::kSimple:
      for (const json& event : array_field(result, "events")) {
        const bool is_delete = event.value("type", std::string()) == "DELETE";
        out << (is_delete ? "DELETE" : "PUT") << "\n";
        if (auto p = event.find("prev_kv"); p != event.end()) print_kv(out, *p);
        print_kv(out, event.value("kv", json::object()));
      }
      return true;
    case OutputFormat::kJson: {
      // etcdctl marshals clientv3.WatchResponse: Go field names, event type
      // as its enum number (omitted for PUT), Events null when none.
      json o = json::object();
      o["Header"] = to_etcdctl_json(result.value("header", json::object()));
      const json& events = array_field(result, "events");
      if (events.empty()) {
        o["Events"] = nullptr;
      } else {
        o["Events"] = json::array();
        for (const json& event : events) {
          json e = json::object();
          if (event.value("type", std::string()) == "DELETE") e["type"] = 1;
          if (auto kv = event.find("kv"); kv != event.end()) e["kv"] = to_etcdctl_json(*kv);
          if (auto p = event.find("prev_kv"); p != event.end()) e["prev_kv"] = to_etcdctl_json(*p);
          o["Events"].push_back(std::move(e));
        }
      }
      o["CompactRevision"] = static_cast<int64_t>(etcdwire::json_u64(result, "compact_revision"));
      o["Canceled"] = result.value("canceled", false);
      o["Created"] = result.value("created", false);
      out << json_text(o) << "\n";
      return true;
    }
    case OutputFormat::kTable:
      return false;
  }
  return false;
}

bool print_member_list(const json& response, OutputFormat format, std::ostream& out,
                       const json* replacements) {
  std::vector<std::vector<std::string>> rows;
  for (const json& m : array_field(response, "members")) {
    const std::string name = m.value("name", std::string());
    const uint64_t id = etcdwire::json_u64(m, "ID");
    rows.push_back({etcdwire::id_to_hex(id), name.empty() ? "unstarted" : "started", name,
                    join(array_field(m, "peerURLs"), ","), join(array_field(m, "clientURLs"), ","),
                    m.value("isLearner", false) ? "true" : "false"});
    if (!replacements) continue;
    // The record naming this member, if it took a dead member's seat.
    std::string replaced, at;
    for (const json& r : *replacements) {
      if (!r.is_object() || etcdwire::parse_hex_id(r.value("member_id", "")) != id) continue;
      const json dead = r.value("replaced", json());
      replaced = dead.is_object() ? dead.value("name", std::string()) + " (" +
                                        dead.value("id", std::string()) + ")"
                                  : "(a free seat)";
      at = r.value("replaced_at", std::string());
    }
    rows.back().push_back(replaced);
    rows.back().push_back(at);
  }
  switch (format) {
    case OutputFormat::kSimple:
      for (const auto& r : rows) {
        for (size_t i = 0; i < r.size(); ++i) out << (i ? ", " : "") << r[i];
        out << "\n";
      }
      return true;
    case OutputFormat::kJson: {
      json o = to_etcdctl_json(response);
      if (replacements) o["replacements"] = *replacements;
      out << json_text(o) << "\n";
      return true;
    }
    case OutputFormat::kTable: {
      std::vector<std::string> header = {"ID",         "STATUS",       "NAME",
                                         "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER"};
      if (replacements) {
        header.push_back("REPLACED");
        header.push_back("REPLACED AT");
      }
      out << render_table(header, rows);
      return true;
    }
  }
  return false;
}

bool print_member_add(const json& response, const std::string& name, OutputFormat format,
                      std::ostream& out) {
  switch (format) {
    case OutputFormat::kSimple: {
      const json member = response.value("member", json::object());
      const uint64_t id = etcdwire::json_u64(member, "ID");
      out << "Member " << padded_hex(id) << " added to cluster " << cluster_id_of(response)
          << "\n\n";
      // The environment a new member starts with, in the member list's order;
      // the new member is named here because it has not started yet.
      std::string initial_cluster;
      for (const json& m : array_field(response, "members")) {
        const std::string n =
            etcdwire::json_u64(m, "ID") == id ? name : m.value("name", std::string());
        for (const json& u : array_field(m, "peerURLs")) {
          if (!initial_cluster.empty()) initial_cluster += ",";
          initial_cluster += n + "=" + u.get<std::string>();
        }
      }
      out << "ETCD_NAME=\"" << name << "\"\n"
          << "ETCD_INITIAL_CLUSTER=\"" << initial_cluster << "\"\n"
          << "ETCD_INITIAL_ADVERTISE_PEER_URLS=\"" << join(array_field(member, "peerURLs"), ",")
          << "\"\n"
          << "ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n";
      return true;
    }
    case OutputFormat::kJson:
      out << json_text(to_etcdctl_json(response)) << "\n";
      return true;
    case OutputFormat::kTable:
      return false;
  }
  return false;
}

bool print_member_change(const json& response, uint64_t id, const std::string& verb,
                         OutputFormat format, std::ostream& out) {
  switch (format) {
    case OutputFormat::kSimple:
      out << "Member " << padded_hex(id) << " " << verb << " cluster " << cluster_id_of(response)
          << "\n";
      return true;
    case OutputFormat::kJson:
      out << json_text(to_etcdctl_json(response)) << "\n";
      return true;
    case OutputFormat::kTable:
      return false;
  }
  return false;
}

bool print_endpoint_health(const std::vector<EndpointHealth>& health, OutputFormat format,
                           std::ostream& out, std::ostream& err) {
  switch (format) {
    case OutputFormat::kSimple:
      for (const EndpointHealth& h : health) {
        if (h.healthy) {
          out << h.endpoint << " is healthy: successfully committed proposal: took = "
              << etcdwire::format_go_duration(h.took) << "\n";
        } else {
          err << h.endpoint << " is unhealthy: failed to commit proposal: " << h.error << "\n";
        }
      }
      return true;
    case OutputFormat::kJson: {
      json list = json::array();
      for (const EndpointHealth& h : health) {
        json o = {{"endpoint", h.endpoint},
                  {"health", h.healthy},
                  {"took", etcdwire::format_go_duration(h.took)}};
        if (!h.error.empty()) o["error"] = h.error;
        list.push_back(std::move(o));
      }
      out << json_text(list) << "\n";
      return true;
    }
    case OutputFormat::kTable: {
      std::vector<std::vector<std::string>> rows;
      for (const EndpointHealth& h : health)
        rows.push_back({h.endpoint, h.healthy ? "true" : "false",
                        etcdwire::format_go_duration(h.took), h.error});
      out << render_table({"ENDPOINT", "HEALTH", "TOOK", "ERROR"}, rows);
      return true;
    }
  }
  return false;
}

bool print_endpoint_status(const std::vector<EndpointStatus>& statuses, OutputFormat format,
                           std::ostream& out) {
  std::vector<std::vector<std::string>> rows;
  for (const EndpointStatus& s : statuses) {
    const json header = s.status.value("header", json::object());
    const uint64_t member = etcdwire::json_u64(header, "member_id");
    rows.push_back(
        {s.endpoint, etcdwire::id_to_hex(member), s.status.value("version", std::string()),
         humanize_bytes(etcdwire::json_u64(s.status, "dbSize")),
         member != 0 && member == etcdwire::json_u64(s.status, "leader") ? "true" : "false",
         s.status.value("isLearner", false) ? "true" : "false",
         std::to_string(etcdwire::json_u64(s.status, "raftTerm")),
         std::to_string(etcdwire::json_u64(s.status, "raftIndex")),
         std::to_string(etcdwire::json_u64(s.status, "raftAppliedIndex")),
         join(array_field(s.status, "errors"), ", ")});
  }
  switch (format) {
    case OutputFormat::kSimple:
      for (const auto& r : rows) {
        std::string line;
        for (const std::string& cell : r) line += (line.empty() ? "" : ", ") + cell;
        // The separator before the errors column is always written, so a
        // member without errors ends its line in ", " (as with etcdctl).
        out << line << "\n";
      }
      return true;
    case OutputFormat::kJson: {
      json list = json::array();
      for (const EndpointStatus& s : statuses)
        list.push_back({{"Endpoint", s.endpoint}, {"Status", to_etcdctl_json(s.status)}});
      out << json_text(list) << "\n";
      return true;
    }
    case OutputFormat::kTable:
      out << render_table({"ENDPOINT", "ID", "VERSION", "DB SIZE", "IS LEADER", "IS LEARNER",
                           "RAFT TERM", "RAFT INDEX", "RAFT APPLIED INDEX", "ERRORS"},
                          rows);
      return true;
  }
  return false;
}

}  // namespace muster::ctl
