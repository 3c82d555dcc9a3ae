#include "base/ids.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

namespace kiln {
namespace {
constexpr char kHex[] = "0123456789abcdef";

std::string ToHex(const unsigned char* p, size_t n) {
  std::string out(n * 2, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kHex[p[i] >> 4];
    out[2 * i + 1] = kHex[p[i] & 15];
  }
  return out;
}

void Random(unsigned char* p, size_t n) {
  if (RAND_bytes(p, static_cast<int>(n)) != 1) throw std::runtime_error("RAND_bytes failed");
}
}  // namespace

std::string NewObjectId(int64_t now_ms) {
  struct Process {
    unsigned char tag[5];
    std::atomic<uint32_t> counter;
    Process() {
      Random(tag, sizeof tag);
      unsigned char c[3];
      Random(c, sizeof c);
      counter =
          (uint32_t{c[0]} << 16 | uint32_t{c[1]} << 8 | c[2]) & 0x7fffff;  // far from wrapping
    }
  };
  static Process process;
  unsigned char b[12];
  uint32_t secs = static_cast<uint32_t>(now_ms / 1000);
  uint32_t n = process.counter.fetch_add(1, std::memory_order_relaxed);
  b[0] = secs >> 24, b[1] = secs >> 16, b[2] = secs >> 8, b[3] = secs;
  std::memcpy(b + 4, process.tag, sizeof process.tag);
  b[9] = n >> 16, b[10] = n >> 8, b[11] = n;
  return ToHex(b, 12);
}

bool IsObjectId(std::string_view s) {
  if (s.size() != 24) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::string RandomHex(size_t n) {
  std::string raw(n, '\0');
  Random(reinterpret_cast<unsigned char*>(raw.data()), n);
  return ToHex(reinterpret_cast<const unsigned char*>(raw.data()), n);
}

// Reservation ids are drawn on every reserve, touch and push delivery. One
// RAND_bytes call per 32 of them keeps OpenSSL's locking and fork check off
// that path; the bytes are the same CSPRNG output either way. (Kiln forks
// only to exec runc, so no child ever draws from a copied buffer.)
uint64_t RandomU64() {
  constexpr size_t kBuffered = 32;
  thread_local uint64_t buf[kBuffered];
  thread_local size_t left = 0;
  if (left == 0) {
    Random(reinterpret_cast<unsigned char*>(buf), sizeof buf);
    left = kBuffered;
  }
  return buf[--left];
}

std::string Sha256Hex(std::string_view s) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(s.data(), s.size(), md, &len, EVP_sha256(), nullptr);
  return ToHex(md, len);
}

std::string Sha256FileHex(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return "";
  struct stat st;
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  bool ok = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && ctx &&
            EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1;
  std::vector<char> buf(1 << 16);
  while (ok) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = n == 0;
      break;
    }
    ok = EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(n)) == 1;
  }
  ::close(fd);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!ok || EVP_DigestFinal_ex(ctx.get(), md, &len) != 1) return "";
  return ToHex(md, len);
}

std::string Md5Hex(std::string_view s) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(s.data(), s.size(), md, &len, EVP_md5(), nullptr);
  return ToHex(md, len);
}

std::string HexU64(uint64_t v) {
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) out[i] = kHex[v & 15];
  return out;
}

bool ParseHexU64(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 16) return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), *out, 16);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

bool ParseU64(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), *out, 10);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

}  // namespace kiln
