// node/config/urls.h: URL lists and name=URL maps as etcd's command line
// understands them (etcd 3.4 pkg/types/urls.go, urlsmap.go).
//
// An etcd URL on the command line is "scheme://host:port" with scheme one of
// http, https, unix, unixs, a mandatory ":port" (which may be empty, as Go's
// net.SplitHostPort allows) and no path.  Lists are comma-separated, spaces
// around items are trimmed, and the parsed list is SORTED by its text form:
// etcd sorts every URL list it parses, and member IDs depend on that order.
//
// Pure functions; any thread.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "node/config/result.h"

namespace muster::config {

// One URL split into the parts etcd's checks look at.
struct EtcdUrl {
  std::string scheme;  // lower case: http, https, unix or unixs
  std::string host;    // without brackets for IPv6 literals; may be empty
  std::string port;    // may be empty ("http://h:" is accepted, as in etcd)
  std::string text;    // the normalised text form (Go's url.URL.String())
};

// Parses one URL with etcd's types.NewURLs rules.  Errors:
//   URL scheme must be http, https, unix, or unixs: <in>
//   URL address does not have the form "host:port": <in>
//   URL must not contain a path: <in>
Result<EtcdUrl> parse_etcd_url(std::string_view in);

// Parses a comma-separated list (types.NewURLs(strings.Split(s, ","))) and
// returns the text forms sorted.  An empty string is one empty item and so
// fails the scheme check, exactly as in etcd.
Result<std::vector<std::string>> parse_url_list(std::string_view comma_separated);

// etcd's types.URLsMap: member name -> its peer URLs (sorted).  Names are
// ordered (std::map) so String() and iteration are deterministic.
using UrlsMap = std::map<std::string, std::vector<std::string>>;

// Parses "n1=http://a:2380,n1=http://b:2380,n2=http://c:2380" (the
// --initial-cluster syntax).  Empty items are skipped; an item without '='
// is a name with an empty URL (so it fails the URL check, as in etcd).  A
// name given twice collects both URLs.  The same URL given twice (for one
// name or two) is rejected with etcd's bootstrap error
// "initial cluster <String()> has duplicate url".
Result<UrlsMap> parse_initial_cluster(std::string_view s);

// URLsMap.String(): every "name=url" pair, pairs sorted, joined by ",".
std::string urls_map_string(const UrlsMap& m);

// Go's net.SplitHostPort on "host:port" / "[v6]:port".  Returns false on
// "missing port", "too many colons" and bracket errors.
bool split_host_port(std::string_view hostport, std::string* host, std::string* port);

// True when `host` is an IPv4 or IPv6 literal (Go's net.ParseIP != nil).
bool is_ip_literal(const std::string& host);

}  // namespace muster::config
