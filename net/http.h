// net/http.h: the HTTP message types every Muster program speaks.
//
// Plain value types with no Beast in sight, so that modules above net/ stay
// cheap to compile.  Parsing is Beast's job (net/*.cpp); serialising a
// response is simple enough to do by hand (net/http.cpp).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace muster::net {

// Case-insensitive ordering for header names (RFC 9110: field names are
// case-insensitive).
struct HeaderNameLess {
  bool operator()(std::string_view a, std::string_view b) const;
};

// Header fields.  One value per name; a repeated field is joined with ", "
// as RFC 9110 section 5.3 allows.  Kept in arrival order in one vector: a
// request has a dozen fields at most, so a linear search by name beats a
// map's node per field (every gRPC call used to allocate one per header).
class Headers {
 public:
  using Field = std::pair<std::string, std::string>;
  void set(std::string name, std::string value);
  void add(std::string name, std::string value);
  void reserve(std::size_t n) { fields_.reserve(n); }
  std::optional<std::string> get(std::string_view name) const;
  // The value of `name`, or null; valid until the headers change.
  const std::string* find(std::string_view name) const;
  bool has(std::string_view name) const { return find(name) != nullptr; }
  void erase(std::string_view name);
  const std::vector<Field>& all() const { return fields_; }

 private:
  std::vector<Field> fields_;
};

struct Request {
  std::string method;  // "GET", "PUT", ...
  std::string target;  // origin-form: path[?query], still percent-encoded
  Headers headers;
  std::string body;
  bool keep_alive = true;

  // Decoded path (percent-decoding applied) and raw query of target.
  std::string path() const;
  std::string raw_query() const;
};

struct Response {
  int status = 200;
  Headers headers;
  std::string body;

  static Response text(int status, std::string body);
  static Response json(int status, std::string body);
};

// "OK", "Not Found", ... for a status code.
std::string_view status_reason(int status);

// Serialises the status line and headers of a response (ending with the blank
// line).  Content-Length is added when `content_length` is set; otherwise the
// caller is expected to have set Transfer-Encoding.
std::string serialize_head(const Response& r, std::optional<std::size_t> content_length,
                           bool keep_alive);

// Percent-decoding (RFC 3986).  `plus_is_space` for form bodies.  Returns
// nullopt on a malformed escape.
std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space = false);
std::string percent_encode(std::string_view s);  // unreserved characters kept

// application/x-www-form-urlencoded and query strings: ordered pairs, names and
// values decoded.  nullopt on a malformed escape.
using FormValues = std::vector<std::pair<std::string, std::string>>;
std::optional<FormValues> parse_form(std::string_view s);
// The first value of `name`, if present.
std::optional<std::string> form_get(const FormValues& v, std::string_view name);

}  // namespace muster::net
