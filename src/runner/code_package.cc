#include "runner/code_package.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>

#include "runner/archive_copy.h"

namespace kiln::runner {
namespace {

using ReadArchive = std::unique_ptr<archive, int (*)(archive*)>;

ReadArchive NewZipReader() {
  ReadArchive a(archive_read_new(), archive_read_free);
  archive_read_support_format_zip(a.get());
  return a;
}

// Relative, no "..", and short: libarchive writes a path longer than
// PATH_MAX by chdir-ing along it, which moves the working directory of
// every thread of the server while it does.
constexpr size_t kMaxName = 1024, kMaxComponent = 255, kMaxDepth = 64;

bool SafeName(const std::string& name) {
  if (name.empty() || name.front() == '/' || name.size() > kMaxName) return false;
  size_t depth = 0;
  for (size_t i = 0; i < name.size();) {  // a trailing '/' (a directory) is no level
    size_t j = name.find('/', i);
    if (j == std::string::npos) j = name.size();
    if (name.compare(i, j - i, "..") == 0 || j - i > kMaxComponent || ++depth > kMaxDepth)
      return false;
    i = j + 1;
  }
  return true;
}

// Whether the archive's last 64 KiB hold its end-of-central-directory
// record (zip64 archives have one too): a zip cut short between two
// members still reads member by member, short of what its maker put in.
bool EndsWithCentralDirectory(const std::string& bytes) {
  constexpr size_t kRecord = 22, kMaxComment = 0xffff;
  if (bytes.size() < kRecord) return false;
  size_t lowest = bytes.size() > kRecord + kMaxComment ? bytes.size() - kRecord - kMaxComment : 0;
  for (size_t at = bytes.size() - kRecord;; --at) {
    if (bytes.compare(at, 4, "PK\x05\x06") == 0) {
      auto u32 = [&](size_t i) {
        return static_cast<uint32_t>(static_cast<unsigned char>(bytes[i])) |
               static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8 |
               static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 2])) << 16 |
               static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 3])) << 24;
      };
      size_t comment = static_cast<unsigned char>(bytes[at + 20]) |
                       static_cast<unsigned char>(bytes[at + 21]) << 8;
      // Its directory is where it says, just before it: an end record of a
      // stored zip inside (a .jar as the last member) is no such thing.
      // Zip64 keeps the offset elsewhere (0xffffffff here).
      uint32_t size = u32(at + 12), offset = u32(at + 16);
      bool directory =
          offset == 0xffffffff || (size_t{offset} + size <= at &&
                                   (size == 0 || bytes.compare(offset, 4, "PK\x01\x02") == 0));
      if (directory && at + kRecord + comment <= bytes.size())
        return true;  // trailing bytes, as unzip allows
    }
    if (at == lowest) return false;
  }
}

std::string ErrorText(archive* a) {
  const char* s = archive_error_string(a);
  return s ? s : "unreadable";
}

}  // namespace

Result<ZipInfo> CheckZip(const std::string& bytes, int64_t max_unpacked, int64_t max_entries) {
  auto a = NewZipReader();
  if (archive_read_open_memory(a.get(), bytes.data(), bytes.size()) != ARCHIVE_OK)
    return Fail(Error::InvalidArgument("the file part is not a zip archive"));
  if (!EndsWithCentralDirectory(bytes))
    return Fail(
        Error::InvalidArgument("the zip archive has no central directory at its end (cut short?)"));
  ZipInfo info;
  std::set<std::string, std::less<>> dirs;  // made on the way to members: inodes too
  archive_entry* e;
  int r;
  while ((r = archive_read_next_header(a.get(), &e)) == ARCHIVE_OK) {
    std::string name = archive_entry_pathname(e) ? archive_entry_pathname(e) : "";
    if (!SafeName(name))
      return Fail(Error::InvalidArgument("unsafe path (or longer than " + std::to_string(kMaxName) +
                                         " bytes, " + std::to_string(kMaxDepth) +
                                         " levels) in the zip archive: " + name.substr(0, 200)));
    std::string path = name;
    bool dir = !path.empty() && path.back() == '/';
    if (dir) path.pop_back();
    for (size_t at = path.find('/'); at != std::string::npos; at = path.find('/', at + 1))
      if (dirs.insert(path.substr(0, at)).second) ++info.files;
    if (dir ? dirs.insert(path).second : true) ++info.files;
    if (!dir) info.members.insert(path);
    if (info.files > max_entries)
      return Fail(Error::TooLarge("the zip archive has more than " + std::to_string(max_entries) +
                                  " entries (each run unpacks them all)"));
    la_int64_t declared = archive_entry_size(e);
    info.unpacked_bytes += declared;
    if (info.unpacked_bytes > max_unpacked)
      return Fail(Error::TooLarge("the zip archive unpacks to more than " +
                                  std::to_string(max_unpacked >> 20) + " MB"));
    // What it holds, against what it says: inflating stops at the first
    // byte past it, so a bomb costs little to find.
    const void* buf;
    size_t size;
    la_int64_t offset, held = 0;
    while ((r = archive_read_data_block(a.get(), &buf, &size, &offset)) == ARCHIVE_OK) {
      held = std::max<la_int64_t>(held, offset + static_cast<la_int64_t>(size));
      if (held > declared)
        return Fail(Error::InvalidArgument("the zip archive's member " + name.substr(0, 200) +
                                           " holds more than the " + std::to_string(declared) +
                                           " bytes it says"));
    }
    if (r != ARCHIVE_EOF)
      return Fail(Error::InvalidArgument("bad zip archive: " + name.substr(0, 200) + ": " +
                                         ErrorText(a.get())));
  }
  if (r != ARCHIVE_EOF)
    return Fail(Error::InvalidArgument(std::string("bad zip archive: ") + ErrorText(a.get())));
  return info;
}

Result<std::string> ZipDirectory(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return Fail(Error::InvalidArgument("not a directory: " + dir));
  std::unique_ptr<archive, int (*)(archive*)> a(archive_write_new(), archive_write_free);
  archive_write_set_format_zip(a.get());
  archive_write_set_bytes_in_last_block(a.get(), 1);  // no padding after the zip
  std::string out;
  out.reserve(1 << 16);
  auto write_cb = [](archive*, void* ud, const void* buf, size_t n) -> la_ssize_t {
    static_cast<std::string*>(ud)->append(static_cast<const char*>(buf), n);
    return static_cast<la_ssize_t>(n);
  };
  if (archive_write_open(a.get(), &out, nullptr, write_cb, nullptr) != ARCHIVE_OK)
    return Fail(Error::Internal("cannot start a zip archive"));
  std::unique_ptr<archive_entry, void (*)(archive_entry*)> e(archive_entry_new(),
                                                             archive_entry_free);
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    struct stat st;
    if (lstat(it->path().c_str(), &st) != 0) continue;
    std::string rel = fs::relative(it->path(), dir, ec).string();
    archive_entry_clear(e.get());
    archive_entry_copy_stat(e.get(), &st);
    archive_entry_set_pathname(e.get(), rel.c_str());
    std::string data;
    if (S_ISLNK(st.st_mode)) {
      archive_entry_set_symlink(e.get(), fs::read_symlink(it->path(), ec).c_str());
    } else if (S_ISREG(st.st_mode)) {
      std::ifstream in(it->path(), std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      data = ss.str();
    } else if (!S_ISDIR(st.st_mode)) {
      continue;  // no devices, sockets, fifos
    }
    if (archive_write_header(a.get(), e.get()) != ARCHIVE_OK)
      return Fail(Error::Internal("cannot add " + rel + ": " + ErrorText(a.get())));
    if (!data.empty()) archive_write_data(a.get(), data.data(), data.size());
  }
  if (ec) return Fail(Error::InvalidArgument("cannot read " + dir + ": " + ec.message()));
  if (archive_write_close(a.get()) != ARCHIVE_OK)
    return Fail(Error::Internal("cannot finish the zip archive: " + ErrorText(a.get())));
  return out;
}

namespace {

// `text` with every `from` in it as `to`.
std::string ReplaceAll(std::string text, const std::string& from, const std::string& to) {
  if (from.empty()) return text;
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
  return text;
}

Result<void> ExtractZipInto(const std::string& zip_path, const std::string& root,
                            int64_t max_bytes);

}  // namespace

Result<void> ExtractZip(const std::string& zip_path, const std::string& dir, int64_t max_bytes) {
  // Members get absolute paths under `dir` (names were checked: relative,
  // no ".."); no component of `dir` itself may be a symlink for the check
  // against writing through symlinks, hence the canonical path.
  std::error_code ec;
  std::string root = std::filesystem::canonical(dir, ec).string();
  if (ec) return Fail(Error::Internal("no task directory"));
  auto r = ExtractZipInto(zip_path, root, max_bytes);
  if (r) return r;
  // What goes into the task's msg names the task dir as the task sees it,
  // not the host's paths (libarchive's texts name the files it wrote).
  std::string msg = ReplaceAll(r.error().message(), root, "/task");
  msg = ReplaceAll(std::move(msg), dir, "/task");
  msg = ReplaceAll(std::move(msg), zip_path, "the code package");
  return Fail(Error(r.error().code(), std::move(msg)));
}

namespace {

Result<void> ExtractZipInto(const std::string& zip_path, const std::string& root,
                            int64_t max_bytes) {
  auto a = NewZipReader();
  if (archive_read_open_filename(a.get(), zip_path.c_str(), 1 << 16) != ARCHIVE_OK)
    return Fail(Error::Internal("cannot open code package " + zip_path));
  std::unique_ptr<archive, int (*)(archive*)> disk(archive_write_disk_new(), archive_write_free);
  // Modes without ARCHIVE_EXTRACT_PERM: as given less the umask, and never
  // setuid or setgid (Kiln unpacks as root).
  archive_write_disk_set_options(disk.get(), ARCHIVE_EXTRACT_TIME |
                                                 ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                                 ARCHIVE_EXTRACT_SECURE_SYMLINKS);
  archive_entry* e;
  int r;
  while ((r = archive_read_next_header(a.get(), &e)) == ARCHIVE_OK) {
    std::string name = archive_entry_pathname(e) ? archive_entry_pathname(e) : "";
    if (!SafeName(name)) return Fail(Error::InvalidArgument("unsafe path in the code package"));
    auto type = archive_entry_filetype(e);
    if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK) continue;
    std::string out = root + "/" + name;
    archive_entry_set_pathname(e, out.c_str());
    if (type == AE_IFREG && !archive_entry_size_is_set(e))
      return Fail(Error::InvalidArgument("a file without a size in the code package: " + name));
    if (auto w = CopyEntry(a.get(), disk.get(), e, name, &max_bytes); !w) return Fail(w.error());
  }
  if (r != ARCHIVE_EOF)
    return Fail(Error::InvalidArgument(std::string("bad code package: ") + ErrorText(a.get())));
  return Ok();
}

}  // namespace
}  // namespace kiln::runner
