#include "node/proxy/director.h"

#include <algorithm>

namespace muster::proxy {

Director::Director(std::chrono::milliseconds failure_wait, std::function<Clock::time_point()> now)
    : failure_wait_(failure_wait), now_(std::move(now)) {}

void Director::set_endpoints(std::vector<std::string> urls) {
  std::lock_guard lock(mu_);
  std::vector<std::string> unique;
  for (auto& u : urls)
    if (std::find(unique.begin(), unique.end(), u) == unique.end()) unique.push_back(std::move(u));
  urls_ = std::move(unique);
  for (auto it = failed_until_.begin(); it != failed_until_.end();) {
    if (std::find(urls_.begin(), urls_.end(), it->first) == urls_.end())
      it = failed_until_.erase(it);
    else
      ++it;
  }
}

std::vector<std::string> Director::available() const {
  std::lock_guard lock(mu_);
  auto now = now_();
  std::vector<std::string> out;
  for (const auto& u : urls_) {
    auto f = failed_until_.find(u);
    if (f == failed_until_.end() || f->second <= now) out.push_back(u);
  }
  return out;
}

std::vector<std::string> Director::all() const {
  std::lock_guard lock(mu_);
  return urls_;
}

void Director::failed(const std::string& url) {
  std::lock_guard lock(mu_);
  if (std::find(urls_.begin(), urls_.end(), url) == urls_.end()) return;
  failed_until_[url] = now_() + failure_wait_;
}

void Director::succeeded(const std::string& url) {
  std::lock_guard lock(mu_);
  auto it = std::find(urls_.begin(), urls_.end(), url);
  if (it == urls_.end()) return;
  failed_until_.erase(url);
  std::rotate(urls_.begin(), it, it + 1);
}

}  // namespace muster::proxy
