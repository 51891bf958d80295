#include "net/http.h"

#include <algorithm>
#include <cctype>

namespace muster::net {

bool HeaderNameLess::operator()(std::string_view a, std::string_view b) const {
  return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) <
           std::tolower(static_cast<unsigned char>(y));
  });
}

namespace {
bool same_name(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}
}  // namespace

const std::string* Headers::find(std::string_view name) const {
  for (const auto& f : fields_)
    if (same_name(f.first, name)) return &f.second;
  return nullptr;
}

void Headers::set(std::string name, std::string value) {
  if (auto* v = find(name)) {
    *const_cast<std::string*>(v) = std::move(value);
    return;
  }
  if (fields_.capacity() == 0) fields_.reserve(12);
  fields_.emplace_back(std::move(name), std::move(value));
}

void Headers::add(std::string name, std::string value) {
  if (auto* v = find(name)) {
    auto* joined = const_cast<std::string*>(v);
    *joined += ", ";
    *joined += value;
    return;
  }
  if (fields_.capacity() == 0) fields_.reserve(12);
  fields_.emplace_back(std::move(name), std::move(value));
}

std::optional<std::string> Headers::get(std::string_view name) const {
  if (auto* v = find(name)) return *v;
  return std::nullopt;
}

void Headers::erase(std::string_view name) {
  fields_.erase(std::remove_if(fields_.begin(), fields_.end(),
                               [&](const Field& f) { return same_name(f.first, name); }),
                fields_.end());
}

std::string Request::path() const {
  auto q = target.find('?');
  std::string_view raw = std::string_view(target).substr(0, q);
  auto decoded = percent_decode(raw);
  return decoded ? *decoded : std::string(raw);
}

std::string Request::raw_query() const {
  auto q = target.find('?');
  return q == std::string::npos ? std::string() : target.substr(q + 1);
}

Response Response::text(int status, std::string body) {
  Response r;
  r.status = status;
  r.headers.set("Content-Type", "text/plain; charset=utf-8");
  r.body = std::move(body);
  return r;
}

Response Response::json(int status, std::string body) {
  Response r;
  r.status = status;
  r.headers.set("Content-Type", "application/json");
  r.body = std::move(body);
  return r;
}

std::string_view status_reason(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 307:
      return "Temporary Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 411:
      return "Length Required";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Payload Too Large";
    case 414:
      return "URI Too Long";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Unknown";
  }
}

std::string serialize_head(const Response& r, std::optional<std::size_t> content_length,
                           bool keep_alive) {
  std::string out = "HTTP/1.1 " + std::to_string(r.status) + " ";
  out += status_reason(r.status);
  out += "\r\n";
  for (const auto& [name, value] : r.headers.all()) {
    HeaderNameLess less;
    if (!less(name, "Content-Length") && !less("Content-Length", name)) continue;
    if (!less(name, "Connection") && !less("Connection", name)) continue;
    out += name;
    out += ": ";
    out += value;
    out += "\r\n";
  }
  if (content_length) out += "Content-Length: " + std::to_string(*content_length) + "\r\n";
  if (!keep_alive) out += "Connection: close\r\n";
  out += "\r\n";
  return out;
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string percent_encode(std::string_view s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::optional<FormValues> parse_form(std::string_view s) {
  FormValues out;
  while (!s.empty()) {
    auto amp = s.find('&');
    std::string_view pair = s.substr(0, amp);
    s = amp == std::string_view::npos ? std::string_view() : s.substr(amp + 1);
    if (pair.empty()) continue;
    auto eq = pair.find('=');
    auto name = percent_decode(pair.substr(0, eq), true);
    auto value = eq == std::string_view::npos ? std::optional<std::string>(std::string())
                                              : percent_decode(pair.substr(eq + 1), true);
    if (!name || !value) return std::nullopt;
    out.emplace_back(std::move(*name), std::move(*value));
  }
  return out;
}

std::optional<std::string> form_get(const FormValues& v, std::string_view name) {
  for (const auto& [n, val] : v)
    if (n == name) return val;
  return std::nullopt;
}

}  // namespace muster::net
