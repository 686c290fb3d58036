#include "tools/loadgen/http_client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace bms::loadgen {
namespace {

constexpr size_t kMaxHeadBytes = 64 * 1024;
constexpr size_t kReadBytes = 64 * 1024;

absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status Errno(const char* call) {
  const int e = errno;
  if (e == EAGAIN || e == EWOULDBLOCK) {
    return absl::DeadlineExceededError(absl::StrCat(call, ": timed out"));
  }
  return absl::UnavailableError(absl::StrCat(call, ": ", std::strerror(e)));
}

}  // namespace

absl::Status ChunkedDecoder::Feed(std::string_view in, size_t* consumed, const Sink& sink) {
  size_t pos = 0;
  while (pos < in.size() && state_ != State::kDone) {
    switch (state_) {
      case State::kSize: {
        const size_t eol = in.find("\r\n", pos);
        if (eol == std::string_view::npos) {
          if (in.size() - pos > 1024) return absl::InvalidArgumentError("chunk size line too long");
          *consumed = pos;
          return absl::OkStatus();
        }
        std::string_view line = in.substr(pos, eol - pos);
        line = line.substr(0, line.find(';'));  // chunk extensions
        const absl::string_view trimmed = absl::StripAsciiWhitespace(Absl(line));
        uint64_t size = 0;
        if (trimmed.empty() || trimmed.size() > 15 || !absl::SimpleHexAtoi(trimmed, &size)) {
          return absl::InvalidArgumentError(absl::StrCat("bad chunk size '", trimmed, "'"));
        }
        pos = eol + 2;
        remaining_ = size;
        state_ = size == 0 ? State::kTrailer : State::kData;
        break;
      }
      case State::kData: {
        const size_t n = std::min<uint64_t>(remaining_, in.size() - pos);
        sink(in.substr(pos, n));
        pos += n;
        remaining_ -= n;
        if (remaining_ == 0) state_ = State::kDataEnd;
        break;
      }
      case State::kDataEnd:
        if (in.size() - pos < 2) {
          *consumed = pos;
          return absl::OkStatus();
        }
        if (in.substr(pos, 2) != "\r\n") return absl::InvalidArgumentError("chunk without CRLF");
        pos += 2;
        state_ = State::kSize;
        break;
      case State::kTrailer: {
        // Trailer fields, then an empty line.
        const size_t eol = in.find("\r\n", pos);
        if (eol == std::string_view::npos) {
          *consumed = pos;
          return absl::OkStatus();
        }
        if (eol == pos) state_ = State::kDone;
        pos = eol + 2;
        break;
      }
      case State::kDone:
        break;
    }
  }
  *consumed = pos;
  return absl::OkStatus();
}

HttpConnection::HttpConnection(std::string host, int port, int timeout_ms)
    : host_(std::move(host)), port_(port), timeout_ms_(timeout_ms) {}

HttpConnection::~HttpConnection() { Close(); }

void HttpConnection::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  buf_.clear();
}

absl::Status HttpConnection::Connect() {
  Close();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(port_);
  if (int rc = ::getaddrinfo(host_.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("resolve ", host_, ":", port, ": ", ::gai_strerror(rc)));
  }
  absl::Status last = absl::UnavailableError("connect: no address");
  timeval tv{};
  tv.tv_sec = timeout_ms_ / 1000;
  tv.tv_usec = (timeout_ms_ % 1000) * 1000;
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last = Errno("socket");
      continue;
    }
    // SO_SNDTIMEO also bounds connect() on Linux.
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      fd_ = fd;
      break;
    }
    last = Errno("connect");
    ::close(fd);
  }
  ::freeaddrinfo(res);
  return fd_ >= 0 ? absl::OkStatus() : last;
}

absl::Status HttpConnection::WriteAll(const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("send");
    }
    off += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status HttpConnection::ReadSome() {
  char tmp[kReadBytes];
  while (true) {
    const ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
    if (n > 0) {
      buf_.append(tmp, static_cast<size_t>(n));
      return absl::OkStatus();
    }
    if (n == 0) return absl::UnavailableError("recv: connection closed by the server");
    if (errno == EINTR) continue;
    return Errno("recv");
  }
}

absl::Status HttpConnection::ReadHead(HttpResponseHead* head) {
  size_t end;
  while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
    if (buf_.size() > kMaxHeadBytes) return absl::InternalError("response headers too large");
    if (auto s = ReadSome(); !s.ok()) return s;
  }
  const std::string text = buf_.substr(0, end);
  buf_.erase(0, end + 4);
  std::vector<absl::string_view> lines = absl::StrSplit(text, "\r\n");
  // Status line: HTTP/1.1 200 OK
  std::vector<absl::string_view> parts = absl::StrSplit(lines[0], absl::MaxSplits(' ', 2));
  if (parts.size() < 2 || !absl::StartsWith(parts[0], "HTTP/1.") ||
      !absl::SimpleAtoi(parts[1], &head->status)) {
    return absl::InternalError(absl::StrCat("bad status line '", lines[0], "'"));
  }
  head->keep_alive = parts[0] == "HTTP/1.1";
  for (size_t i = 1; i < lines.size(); ++i) {
    const size_t colon = lines[i].find(':');
    if (colon == absl::string_view::npos) continue;
    const std::string name = absl::AsciiStrToLower(lines[i].substr(0, colon));
    const absl::string_view value = absl::StripAsciiWhitespace(lines[i].substr(colon + 1));
    if (name == "content-length") {
      if (!absl::SimpleAtoi(value, &head->content_length) || head->content_length < 0) {
        return absl::InternalError(absl::StrCat("bad Content-Length '", value, "'"));
      }
    } else if (name == "transfer-encoding") {
      head->chunked = absl::StrContains(absl::AsciiStrToLower(value), "chunked");
    } else if (name == "connection") {
      const std::string v = absl::AsciiStrToLower(value);
      if (v == "close") head->keep_alive = false;
      if (v == "keep-alive") head->keep_alive = true;
    } else if (name == "content-type") {
      head->content_type = std::string(value);
    }
  }
  return absl::OkStatus();
}

absl::Status HttpConnection::ReadBody(const HttpResponseHead& head,
                                      const std::function<void(std::string_view)>& on_body) {
  if (head.chunked) {
    ChunkedDecoder decoder;
    while (true) {
      size_t used = 0;
      if (auto s = decoder.Feed(buf_, &used, on_body); !s.ok()) {
        return absl::InternalError(s.message());
      }
      buf_.erase(0, used);
      if (decoder.done()) return absl::OkStatus();
      if (auto s = ReadSome(); !s.ok()) return s;
    }
  }
  if (head.content_length >= 0) {
    uint64_t left = static_cast<uint64_t>(head.content_length);
    while (true) {
      const size_t n = std::min<uint64_t>(left, buf_.size());
      if (n > 0) on_body(std::string_view(buf_).substr(0, n));
      buf_.erase(0, n);
      left -= n;
      if (left == 0) return absl::OkStatus();
      if (auto s = ReadSome(); !s.ok()) return s;
    }
  }
  // No framing: the body runs to the end of the connection.
  while (true) {
    if (!buf_.empty()) on_body(buf_);
    buf_.clear();
    absl::Status s = ReadSome();
    if (absl::IsUnavailable(s)) return absl::OkStatus();
    if (!s.ok()) return s;
  }
}

absl::Status HttpConnection::Exchange(const std::string& request,
                                      const std::function<void(const HttpResponseHead&)>& on_head,
                                      const std::function<void(std::string_view)>& on_body) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    const bool reused = fd_ >= 0;
    if (!reused) {
      if (auto s = Connect(); !s.ok()) return s;
    }
    absl::Status s = WriteAll(request);
    HttpResponseHead head;
    if (s.ok()) s = ReadHead(&head);
    if (!s.ok()) {
      Close();
      // A kept-alive connection the server closed meanwhile: retry once on a fresh one.
      if (reused && absl::IsUnavailable(s)) continue;
      return s;
    }
    on_head(head);
    s = ReadBody(head, on_body);
    if (!s.ok() || !head.keep_alive || (!head.chunked && head.content_length < 0)) Close();
    return s;
  }
  return absl::UnavailableError("connection closed by the server twice");
}

}  // namespace bms::loadgen
