#include "server/http_server.h"

#include <array>
#include <functional>
#include <memory>

#include "absl/strings/str_cat.h"
#include "server/http_log.h"

namespace bms {

namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

// Answers a connection over --max-connections with 429 and closes it.
void RejectConnection(tcp::socket socket, int limit) {
  auto sock = std::make_shared<tcp::socket>(std::move(socket));
  std::string body = JsonError(429,
                               absl::StrCat("too many concurrent connections (limit ", limit,
                                            ", --max-connections)"),
                               "rate_limit_error", "", "too_many_connections")
                         .body;
  auto out = std::make_shared<std::string>(absl::StrCat(
      "HTTP/1.1 429 Too Many Requests\r\nServer: bmserve\r\nContent-Type: application/json\r\n"
      "Retry-After: 1\r\nConnection: close\r\nContent-Length: ",
      body.size(), "\r\n\r\n", body));
  // Half-close after the answer and drain what the client still sends (so it reads the 429
  // rather than a reset); the socket is closed at EOF or after 2 s at most.
  auto timer = std::make_shared<net::steady_timer>(sock->get_executor());
  auto scratch = std::make_shared<std::array<char, 1024>>();
  auto finish = [sock, timer] {
    boost::system::error_code ignored;
    timer->cancel();
    sock->close(ignored);
  };
  net::async_write(*sock, net::buffer(*out),
                   [sock, out, timer, scratch, finish](boost::system::error_code ec, size_t) {
                     boost::system::error_code ignored;
                     if (ec) return finish();
                     sock->shutdown(tcp::socket::shutdown_send, ignored);
                     timer->expires_after(std::chrono::seconds(2));
                     timer->async_wait([sock](boost::system::error_code e) {
                       boost::system::error_code ig;
                       if (!e) sock->close(ig);
                     });
                     auto loop = std::make_shared<std::function<void()>>();
                     *loop = [sock, scratch, finish, loop] {
                       sock->async_read_some(net::buffer(*scratch),
                                             [loop, finish](boost::system::error_code e, size_t) {
                                               if (e) {
                                                 finish();
                                                 *loop = nullptr;  // break the cycle
                                                 return;
                                               }
                                               (*loop)();
                                             });
                     };
                     (*loop)();
                   });
}

}  // namespace

HttpServer::HttpServer(const HttpRouter& router, const ServerLimits& limits,
                       HttpServerOptions options)
    : router_(router),
      limits_(limits),
      options_(std::move(options)),
      ioc_(options_.threads),
      acceptor_(net::make_strand(ioc_)),
      retry_timer_(acceptor_.get_executor()) {
  counters_.on_exchange_done = options_.on_exchange_done;
}

HttpServer::~HttpServer() { Stop(); }

absl::Status HttpServer::Start() {
  boost::system::error_code ec;
  net::ip::address address = net::ip::make_address(options_.host, ec);
  if (ec)
    return absl::InvalidArgumentError(absl::StrCat("--host: bad address '", options_.host, "'"));
  if (options_.port < 0 || options_.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--http-port: out of range: ", options_.port));
  }
  if (options_.threads < 1) return absl::InvalidArgumentError("--http-threads must be >= 1");
  tcp::endpoint endpoint(address, static_cast<unsigned short>(options_.port));
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options_.host, ":", options_.port, ": ", ec.message()));
  }
  port_ = acceptor_.local_endpoint().port();
  Accept();
  for (int i = 0; i < options_.threads; ++i) threads_.emplace_back([this] { ioc_.run(); });
  return absl::OkStatus();
}

void HttpServer::Accept() {
  acceptor_.async_accept(
      net::make_strand(ioc_), [this](boost::system::error_code ec, tcp::socket socket) {
        if (!acceptor_.is_open()) return;
        if (ec) {
          // Out of file descriptors and the like: log, and retry shortly (no busy loop).
          LogLine(absl::StrCat("accept failed: ", ec.message()));
          retry_timer_.expires_after(std::chrono::milliseconds(100));
          retry_timer_.async_wait([this](boost::system::error_code) { Accept(); });
          return;
        } else {
          boost::system::error_code ignored;
          socket.set_option(tcp::no_delay(true), ignored);
          if (counters_.open_connections.load() >= limits_.max_connections) {
            RejectConnection(std::move(socket), limits_.max_connections);
            Accept();
            return;
          }
          std::make_shared<HttpSession>(std::move(socket), router_, limits_, &counters_)->Start();
        }
        Accept();
      });
}

void HttpServer::StopAccepting() {
  net::post(acceptor_.get_executor(), [this] {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
  });
}

void HttpServer::Stop() {
  if (stopped_) return;
  stopped_ = true;
  StopAccepting();
  ioc_.stop();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

}  // namespace bms
