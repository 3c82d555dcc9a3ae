#include "runner/image_store.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <sstream>

#include "base/ids.h"
#include "runner/archive_copy.h"
#include "runner/busybox_rootfs.h"

namespace kiln::runner {
namespace fs = std::filesystem;

namespace {

using ReadArchive = std::unique_ptr<archive, int (*)(archive*)>;

constexpr const char* kBusyboxName = "busybox";

// Images keep their files' owners and modes (setuid ones too): only root
// may reach into the store.
void MakePrivate(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
}

bool IsHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool IsImageId(std::string_view s) { return s.size() == 64 && IsHex(s); }

ReadArchive OpenRead(const std::string& path) {
  ReadArchive a(archive_read_new(), archive_read_free);
  archive_read_support_format_tar(a.get());
  // Layers as images have them; not filter_all, which would also run
  // external programs (lrzip, lzop, ...) as root where they are installed.
  // A decoder libarchive lacks would be an external program too (it says
  // so with ARCHIVE_WARN): such an archive is not read.
  for (auto* add : {archive_read_support_filter_gzip, archive_read_support_filter_zstd,
                    archive_read_support_filter_xz, archive_read_support_filter_bzip2})
    if (add(a.get()) != ARCHIVE_OK) return {nullptr, archive_read_free};
  if (archive_read_open_filename(a.get(), path.c_str(), 1 << 16) != ARCHIVE_OK)
    return {nullptr, archive_read_free};
  return a;
}

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A scratch directory, removed when the import ends however it ends.
struct RemovedAtExit {
  fs::path p;
  ~RemovedAtExit() {
    std::error_code e;
    fs::remove_all(p, e);
  }
};

// A tar member path made relative and clean; "" when it must be refused.
std::string CleanPath(const char* raw) {  // "" for none (and a name with "..")
  std::string p = raw ? raw : "";
  while (p.rfind("./", 0) == 0) p = p.substr(2);
  while (!p.empty() && p.front() == '/') p.erase(0, 1);
  while (!p.empty() && p.back() == '/') p.pop_back();
  for (size_t i = 0; i <= p.size();) {
    size_t j = p.find('/', i);
    if (j == std::string::npos) j = p.size();
    if (p.compare(i, j - i, "..") == 0) return "";
    i = j + 1;
  }
  return p;
}

// `rel` (relative, clean) resolved inside `root` as a process whose root it
// is would see it: each symlink met on the way is followed, an absolute
// target from `root` and ".." never above it, so that the result is always
// under `root` (the host's own /run is not where an image's
// var/run -> /run leads). The last component is followed only when
// `follow_last`. None when links go round more than 40 times.
std::optional<fs::path> ResolveInRoot(const fs::path& root, std::string_view rel,
                                      bool follow_last) {
  auto split = [](std::string_view path, std::deque<std::string>* into, bool front) {
    std::vector<std::string> parts;
    for (size_t i = 0; i <= path.size();) {
      size_t j = std::min(path.find('/', i), path.size());
      if (j > i) parts.emplace_back(path.substr(i, j - i));
      i = j + 1;
    }
    if (front)
      into->insert(into->begin(), parts.begin(), parts.end());
    else
      into->insert(into->end(), parts.begin(), parts.end());
  };
  std::deque<std::string> todo;
  split(rel, &todo, false);
  std::vector<std::string> done;
  int links = 0;
  while (!todo.empty()) {
    std::string part = std::move(todo.front());
    todo.pop_front();
    if (part == ".") continue;
    if (part == "..") {
      if (!done.empty()) done.pop_back();
      continue;
    }
    fs::path here = root;
    for (const auto& d : done) here /= d;
    here /= part;
    struct stat st {};
    if ((!todo.empty() || follow_last) && lstat(here.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
      if (++links > 40) return std::nullopt;
      std::error_code ec;
      std::string target = fs::read_symlink(here, ec).string();
      if (ec) return std::nullopt;
      if (!target.empty() && target.front() == '/') done.clear();
      split(target, &todo, true);
      continue;
    }
    done.push_back(std::move(part));
  }
  fs::path out = root;
  for (const auto& d : done) out /= d;
  return out;
}

// Where member `name` of a layer lands: its parent resolved inside `root`,
// then its own name (an entry replaces a symlink, it does not go through
// it). None when it cannot be placed.
std::optional<fs::path> PlaceInRoot(const fs::path& root, const std::string& name) {
  size_t slash = name.rfind('/');
  std::string base = slash == std::string::npos ? name : name.substr(slash + 1);
  if (base == "." || base.empty()) return root;
  auto parent = ResolveInRoot(root, slash == std::string::npos ? "" : name.substr(0, slash), true);
  if (!parent) return std::nullopt;
  return *parent / base;
}

#if defined(__x86_64__)
constexpr const char* kHostArchitecture = "amd64";
#elif defined(__aarch64__)
constexpr const char* kHostArchitecture = "arm64";
#else
constexpr const char* kHostArchitecture = "unknown";
#endif

// Of an OCI index's `manifests`, the one to run here: the first whose
// platform is linux on this host's architecture, else the first without a
// platform. Attestations (platform unknown/unknown) and other platforms are
// passed over. Null when none fits.
const rapidjson::Value* PickManifest(const rapidjson::Value& manifests) {
  if (!manifests.IsArray()) return nullptr;
  const rapidjson::Value* unplatformed = nullptr;
  for (const auto& m : manifests.GetArray()) {
    if (!m.IsObject()) continue;
    auto p = m.FindMember("platform");
    if (p == m.MemberEnd() || !p->value.IsObject()) {
      if (!unplatformed) unplatformed = &m;
      continue;
    }
    auto field = [&](const char* key) -> std::string_view {
      auto f = p->value.FindMember(key);
      return f != p->value.MemberEnd() && f->value.IsString() ? f->value.GetString() : "";
    };
    if (field("os") == "linux" && field("architecture") == kHostArchitecture) return &m;
  }
  return unplatformed;
}

// What one import may still write: bytes and entries. Taken off as members
// are written; an import that would pass either fails, so that a small
// compressed archive cannot fill the disk the server's store is on.
constexpr long kMaxDepth = 128;        // components of a member's path
constexpr int64_t kEntryBytes = 4096;  // what a member costs on disk at least

struct Budget {
  int64_t bytes = 0;
  int64_t entries = 0;
  Error Spent() const {
    return Error::InvalidArgument(
        "the image unpacks to more than this import may write: the disk's free space (keeping "
        "5% of it, at most 1 GiB) or the store's limit, and at most 5,000,000 files");
  }
};

// The budget of an import into `dir`: at most `max_bytes`, the disk's free
// space less 5% of the disk (at most 1 GiB), and 5,000,000 files (fewer
// when the disk has fewer inodes).
Budget ImportBudget(const std::string& dir, int64_t max_bytes) {
  Budget b{max_bytes, 5'000'000};
  struct statvfs st {};
  if (statvfs(dir.c_str(), &st) == 0) {
    auto size = static_cast<int64_t>(st.f_blocks) * static_cast<int64_t>(st.f_frsize);
    auto avail = static_cast<int64_t>(st.f_bavail) * static_cast<int64_t>(st.f_frsize);
    int64_t keep = std::min<int64_t>(size / 20, int64_t{1} << 30);
    b.bytes = std::min(b.bytes, std::max<int64_t>(0, avail - keep));
    if (st.f_favail > 0) b.entries = std::min<int64_t>(b.entries, st.f_favail * 95 / 100);
  }
  return b;
}

// The part of an image config (docker save and OCI alike: its "config"
// object) a task runs by: Entrypoint, Cmd and Env, as run.json beside the
// root filesystem. Written once per image; a config without them writes
// nothing.
void WriteRunConfig(const std::string& config, const fs::path& image) {
  rapidjson::Document d;
  d.Parse<rapidjson::kParseIterativeFlag>(config.data(), config.size());
  if (d.HasParseError() || !d.IsObject()) return;
  auto c = d.FindMember("config");
  if (c == d.MemberEnd() || !c->value.IsObject()) return;
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  w.StartObject();
  for (const char* key : {"Entrypoint", "Cmd", "Env"}) {
    auto v = c->value.FindMember(key);
    if (v == c->value.MemberEnd() || !v->value.IsArray()) continue;
    w.Key(key);
    w.StartArray();
    for (const auto& x : v->value.GetArray())
      if (x.IsString()) w.String(x.GetString(), x.GetStringLength());
    w.EndArray();
  }
  w.EndObject();
  std::error_code ec;
  if (fs::exists(image / "run.json", ec)) return;
  fs::path tmp = image / ("run.json.tmp-" + RandomHex(4));
  std::ofstream(tmp) << sb.GetString();
  fs::rename(tmp, image / "run.json", ec);
}

// Extracts the regular archive `path` (the outer image tarball) into `dir`.
// Its links (an older docker save writes a layer seen twice as a symlink
// to the first) become hard links to the file they name inside `dir`.
Result<void> Unpack(const std::string& path, const fs::path& dir, Budget* budget) {
  auto a = OpenRead(path);
  if (!a) return Fail(Error::InvalidArgument("not a tar archive: " + path));
  std::vector<std::pair<std::string, std::string>> links;  // member, the member it names
  archive_entry* e;
  int r;
  while ((r = archive_read_next_header(a.get(), &e)) == ARCHIVE_OK) {
    const char* raw = archive_entry_pathname(e);
    std::string name = CleanPath(raw ? raw : "");
    if (name.empty()) continue;
    if (std::count(name.begin(), name.end(), '/') + 1 > kMaxDepth)
      return Fail(Error::InvalidArgument("archive path deeper than 128: " + name.substr(0, 200)));
    if (--budget->entries < 0) return Fail(budget->Spent());
    if (const char* hard = archive_entry_hardlink(e)) {
      links.emplace_back(name, CleanPath(hard));
      continue;
    }
    if (archive_entry_filetype(e) == AE_IFLNK) {
      const char* to = archive_entry_symlink(e);
      if (to && *to && *to != '/') {
        std::string named = (fs::path(name).parent_path() / to).lexically_normal().string();
        links.emplace_back(name, CleanPath(named.c_str()));
      }
      continue;
    }
    if (archive_entry_filetype(e) != AE_IFREG) continue;
    fs::path out = dir / name;
    std::error_code ec;
    fs::create_directories(out.parent_path(), ec);
    std::ofstream f(out, std::ios::binary | std::ios::trunc);
    if (ec || !f) return Fail(Error::InvalidArgument("cannot unpack " + name + " of the archive"));
    const void* buf;
    size_t size;
    la_int64_t offset;
    int d;
    while ((d = archive_read_data_block(a.get(), &buf, &size, &offset)) == ARCHIVE_OK) {
      budget->bytes -= static_cast<int64_t>(size);
      if (budget->bytes < 0) return Fail(budget->Spent());
      f.write(static_cast<const char*>(buf), static_cast<std::streamsize>(size));
    }
    if (d != ARCHIVE_EOF || !f.flush())
      return Fail(Error::InvalidArgument(
          "cannot unpack " + name + " of the archive: " +
          (d != ARCHIVE_EOF ? archive_error_string(a.get()) : "write failed")));
  }
  if (r != ARCHIVE_EOF)
    return Fail(
        Error::InvalidArgument(std::string("bad archive: ") + archive_error_string(a.get())));
  // A link may name another link: a few rounds, each linking what it can.
  for (int round = 0; round < 8 && !links.empty(); ++round) {
    std::erase_if(links, [&](const auto& link) {
      std::error_code ec;
      fs::path to = dir / link.second;
      if (link.second.empty() || !fs::is_regular_file(fs::symlink_status(to, ec))) return false;
      fs::create_directories((dir / link.first).parent_path(), ec);
      fs::remove(dir / link.first, ec);
      fs::create_hard_link(to, dir / link.first, ec);
      return !ec;
    });
  }
  return Ok();
}

// Applies one layer to `root`: whiteouts first (they hide what lower layers
// put there), then the files. Every path is placed inside `root` by
// PlaceInRoot; an entry replaces what is there unless both are directories.
Result<void> ApplyLayer(const std::string& layer, const fs::path& root, Budget* budget) {
  std::error_code ec;
  {
    auto a = OpenRead(layer);
    if (!a) return Fail(Error::InvalidArgument("layer is not a tar archive: " + layer));
    archive_entry* e;
    while (archive_read_next_header(a.get(), &e) == ARCHIVE_OK) {
      std::string name = CleanPath(archive_entry_pathname(e));
      if (name.empty()) continue;
      std::string base = fs::path(name).filename().string();
      if (base.rfind(".wh.", 0) != 0) continue;
      std::string hidden = base.substr(4);
      if (base != ".wh..wh..opq" && (hidden.empty() || hidden == "." || hidden == ".."))
        return Fail(Error::InvalidArgument("layer has a whiteout of nothing: " + name));
      auto at = PlaceInRoot(root, name);
      if (!at) return Fail(Error::InvalidArgument("layer has a symlink loop: " + name));
      fs::path dir = at->parent_path();
      if (base == ".wh..wh..opq") {
        if (fs::is_directory(fs::symlink_status(dir, ec)))
          for (auto& child : fs::directory_iterator(dir, ec)) fs::remove_all(child.path(), ec);
      } else {
        fs::remove_all(dir / hidden, ec);  // a symlink goes, not what it names
      }
    }
  }
  auto a = OpenRead(layer);
  if (!a) return Fail(Error::InvalidArgument("layer is not a tar archive: " + layer));
  std::unique_ptr<archive, int (*)(archive*)> disk(archive_write_disk_new(), archive_write_free);
  archive_write_disk_set_options(disk.get(), ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_OWNER |
                                                 ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_UNLINK |
                                                 ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                                 ARCHIVE_EXTRACT_SECURE_SYMLINKS);
  archive_entry* e;
  int r;
  while ((r = archive_read_next_header(a.get(), &e)) == ARCHIVE_OK) {
    std::string name = CleanPath(archive_entry_pathname(e));
    if (name.empty()) continue;
    if (fs::path(name).filename().string().rfind(".wh.", 0) == 0) continue;
    auto type = archive_entry_filetype(e);
    if (type == AE_IFCHR || type == AE_IFBLK) continue;  // no devices from images
    // Each component may make a directory of its own: all are charged, and
    // a path is at most 128 deep (a few bytes of gzip must not make
    // millions of directories).
    auto depth = std::count(name.begin(), name.end(), '/') + 1;
    if (depth > kMaxDepth)
      return Fail(Error::InvalidArgument("layer path deeper than 128: " + name.substr(0, 200)));
    budget->entries -= depth - 1;
    budget->bytes -= kEntryBytes;
    if (budget->entries < 0 || budget->bytes < 0) return Fail(budget->Spent());
    auto at = PlaceInRoot(root, name);
    if (!at) return Fail(Error::InvalidArgument("layer has a symlink loop: " + name));
    if (const char* link = archive_entry_hardlink(e)) {
      std::string target = CleanPath(link);
      auto to = target.empty() ? std::nullopt : PlaceInRoot(root, target);
      if (!to) return Fail(Error::InvalidArgument("bad hard link: " + name));
      // A hard link carries no data of its own, and so no mode or times to
      // set: libarchive would chmod the link's path, which follows a
      // symlink it linked to (a host file's mode changed).
      archive_entry_set_size(e, 0);
      archive_entry_unset_size(e);
      struct stat target_st {};
      if (lstat(to->c_str(), &target_st) == 0 && S_ISLNK(target_st.st_mode)) {
        // A hard link to a symlink is that symlink again: made as one.
        std::string text = fs::read_symlink(*to, ec).string();
        if (ec) return Fail(Error::InvalidArgument("bad hard link: " + name));
        archive_entry_set_hardlink(e, nullptr);
        archive_entry_set_filetype(e, AE_IFLNK);
        archive_entry_set_symlink(e, text.c_str());
      } else {
        archive_entry_set_hardlink(e, to->c_str());
      }
    }
    // What is there goes, unless both are directories (a directory entry
    // over a symlink makes a directory: its files do not land where the
    // symlink pointed).
    struct stat st {};
    if (*at != root && lstat(at->c_str(), &st) == 0 &&
        !(S_ISDIR(st.st_mode) && type == AE_IFDIR && !archive_entry_hardlink(e)))
      fs::remove_all(*at, ec);
    archive_entry_set_pathname(e, at->c_str());
    if (--budget->entries < 0) return Fail(budget->Spent());
    if (auto w = CopyEntry(a.get(), disk.get(), e, name, &budget->bytes); !w)
      return Fail(budget->bytes < 0 ? budget->Spent() : w.error());
  }
  if (r != ARCHIVE_EOF)
    return Fail(Error::InvalidArgument(std::string("bad layer: ") + archive_error_string(a.get())));
  return Ok();
}

}  // namespace

bool IsImageName(std::string_view name) {
  if (name.empty() || name.size() > 255 || name[0] == '.' || name[0] == '/') return false;
  if (name.find("..") != std::string_view::npos) return false;
  for (unsigned char c : name)
    if (!std::isalnum(c) &&
        std::string_view("._-:/@").find(static_cast<char>(c)) == std::string_view::npos)
      return false;
  return true;
}

Result<void> ImageStore::CheckName(const std::string& name) {
  if (!IsImageName(name)) return Fail(Error::InvalidArgument("bad image name: " + name));
  // Names are looked up before ids: a name that is an id would hide that image.
  if (IsImageId(name))
    return Fail(Error::InvalidArgument("an image name cannot be an image id: " + name));
  return Ok();
}

Result<void> ImageStore::Name(const std::string& name, const std::string& id) {
  if (name.empty()) return Ok();
  if (auto r = CheckName(name); !r) return r;
  fs::path names = fs::path(dir_) / "names";
  fs::create_directories(names);
  std::string file = name;
  for (auto& c : file)
    if (c == '/') c = '%';
  // Written aside and renamed: a reader never sees half an id.
  fs::path tmp = names / (".tmp-" + RandomHex(8));
  {
    std::ofstream out(tmp);
    out << id;
    if (!out.flush()) return Fail(Error::Internal("cannot write the name " + name));
  }
  std::error_code ec;
  fs::rename(tmp, names / file, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return Fail(Error::Internal("cannot write the name " + name + ": " + ec.message()));
  }
  return Ok();
}

Result<ImageInfo> ImageStore::Import(const std::string& archive_path, const std::string& name) {
  if (name == kBusyboxName)
    return Fail(Error::InvalidArgument("busybox is the name of the built-in image"));
  // A malformed archive (a member that is a file and a directory, say)
  // must end the import with an error, and its scratch files removed.
  try {
    return ImportArchive(archive_path, name);
  } catch (const std::exception& e) {
    return Fail(Error::InvalidArgument(std::string("cannot import the archive: ") + e.what()));
  }
}

void ImageStore::SweepScratch() const {
  // An import or stack build cut off by a kill leaves its scratch behind;
  // one a day old is no import's any more.
  std::error_code ec;
  auto old = fs::file_time_type::clock::now() - std::chrono::hours(24);
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    std::string n = e.path().filename().string();
    if (n.rfind("tmp-", 0) != 0 && n.rfind("stack-", 0) != 0) continue;
    std::error_code e2;
    if (fs::last_write_time(e.path(), e2) < old && !e2) fs::remove_all(e.path(), e2);
  }
}

Result<ImageInfo> ImageStore::ImportArchive(const std::string& archive_path,
                                            const std::string& name) {
  MakePrivate(dir_);
  SweepScratch();
  fs::path tmp = fs::path(dir_) / ("tmp-" + RandomHex(8));
  std::error_code ec;
  fs::create_directories(tmp / "archive", ec);
  RemovedAtExit cleanup{tmp};
  Budget budget = ImportBudget(dir_, max_import_bytes_);
  if (auto r = Unpack(archive_path, tmp / "archive", &budget); !r) return Fail(r.error());

  std::vector<std::string> layers, tags;
  std::string config;
  rapidjson::Document d;
  if (fs::exists(tmp / "archive" / "manifest.json")) {  // docker save
    std::string m = ReadFile(tmp / "archive" / "manifest.json");
    d.Parse<rapidjson::kParseIterativeFlag>(m.c_str());
    if (d.HasParseError() || !d.IsArray() || d.Empty() || !d[0].IsObject() ||
        !d[0].HasMember("Layers") || !d[0]["Layers"].IsArray())
      return Fail(Error::InvalidArgument("manifest.json is not a docker save manifest"));
    for (const auto& l : d[0]["Layers"].GetArray())
      if (l.IsString()) layers.push_back(CleanPath(l.GetString()));
    if (d[0].HasMember("RepoTags") && d[0]["RepoTags"].IsArray())
      for (const auto& t : d[0]["RepoTags"].GetArray())
        if (t.IsString()) tags.push_back(t.GetString());
    config = d[0].HasMember("Config") && d[0]["Config"].IsString()
                 ? ReadFile(tmp / "archive" / CleanPath(d[0]["Config"].GetString()))
                 : m;
  } else if (fs::exists(tmp / "archive" / "index.json")) {  // OCI image layout
    // A blob by its digest, once its bytes are checked against it: only
    // sha256:<64 hex> names one ("" otherwise, or when they differ).
    auto blob = [&](const std::string& digest) -> fs::path {
      if (digest.size() != 71 || digest.rfind("sha256:", 0) != 0 || !IsImageId(digest.substr(7)))
        return {};
      fs::path p = tmp / "archive" / "blobs" / "sha256" / digest.substr(7);
      if (Sha256FileHex(p.string()) != digest.substr(7)) return {};
      return p;
    };
    d.Parse<rapidjson::kParseIterativeFlag>(ReadFile(tmp / "archive" / "index.json").c_str());
    if (d.HasParseError() || !d.IsObject() || !d.HasMember("manifests") ||
        !d["manifests"].IsArray() || d["manifests"].Empty())
      return Fail(Error::InvalidArgument("index.json has no manifests"));
    // A descriptor's digest, or "" when it has none (a malformed archive).
    auto digest = [](const rapidjson::Value& v) -> std::string {
      if (!v.IsObject()) return "";
      auto it = v.FindMember("digest");
      return it != v.MemberEnd() && it->value.IsString() ? it->value.GetString() : "";
    };
    // The top descriptor names the image: containerd's full name, else an
    // OCI ref.name that is a repo:tag (buildx and skopeo often set the bare
    // tag, "latest", which would name every such import alike).
    auto annotation = [](const rapidjson::Value& desc, const char* key) -> std::string {
      if (!desc.IsObject()) return "";
      auto a = desc.FindMember("annotations");
      if (a == desc.MemberEnd() || !a->value.IsObject()) return "";
      auto v = a->value.FindMember(key);
      return v != a->value.MemberEnd() && v->value.IsString() ? v->value.GetString() : "";
    };
    const rapidjson::Value* top = PickManifest(d["manifests"]);
    if (!top)
      return Fail(Error::InvalidArgument(std::string("index.json: no manifest for linux/") +
                                         kHostArchitecture));
    if (auto full = annotation(*top, "io.containerd.image.name"); !full.empty())
      tags.push_back(full);
    else if (auto ref = annotation(*top, "org.opencontainers.image.ref.name");
             ref.find_first_of(":/") != std::string::npos)
      tags.push_back(ref);
    // An index may name an index (one per platform, attestations beside):
    // followed down to this host's image manifest.
    std::string want = digest(*top);
    fs::path manifest;
    rapidjson::Document nested;
    for (int depth = 0;; ++depth) {
      if (want.empty())
        return Fail(Error::InvalidArgument("index.json: a manifest without digest"));
      manifest = blob(want);
      if (manifest.empty())
        return Fail(Error::InvalidArgument("index.json: the manifest's digest " + want +
                                           " is not sha256:<hex> of a blob in the archive"));
      nested.Parse<rapidjson::kParseIterativeFlag>(ReadFile(manifest).c_str());
      if (nested.HasParseError() || !nested.IsObject() || !nested.HasMember("manifests")) break;
      if (depth == 4) return Fail(Error::InvalidArgument("index.json: indexes nested too deep"));
      const rapidjson::Value* next = PickManifest(nested["manifests"]);
      if (!next)
        return Fail(Error::InvalidArgument(std::string("image index: no manifest for linux/") +
                                           kHostArchitecture));
      want = digest(*next);
    }
    const rapidjson::Document& m = nested;  // the image manifest
    if (m.HasParseError() || !m.IsObject() || !m.HasMember("layers") || !m["layers"].IsArray())
      return Fail(Error::InvalidArgument("OCI manifest without layers"));
    for (const auto& l : m["layers"].GetArray()) {
      fs::path p = blob(digest(l));
      if (p.empty())
        return Fail(Error::InvalidArgument("OCI manifest: a layer's digest " + digest(l) +
                                           " is not sha256:<hex> of a blob in the archive"));
      layers.push_back("blobs/sha256/" + p.filename().string());
    }
    if (m.HasMember("config") && !digest(m["config"]).empty()) {
      fs::path p = blob(digest(m["config"]));
      if (p.empty())
        return Fail(Error::InvalidArgument("OCI manifest: the config's digest " +
                                           digest(m["config"]) +
                                           " is not sha256:<hex> of a blob in the archive"));
      config = ReadFile(p);
    }
  } else {
    return Fail(Error::InvalidArgument("neither a docker save tarball nor an OCI image archive"));
  }

  // The id covers the layers' bytes as well as the config: an archive that
  // copies another image's config but brings its own layers is another
  // image, and cannot take the place of that one's unpacked files.
  // Each part by its own hash, and their number first: no config can be
  // made to end with another image's first layer hashes and so take that
  // image's id with fewer layers.
  std::string chain = "kiln-image-v2\n" + Sha256Hex(config) + "\n" + std::to_string(layers.size());
  for (const auto& l : layers) {
    std::string h = l.empty() ? "" : Sha256FileHex((tmp / "archive" / l).string());
    if (h.empty()) return Fail(Error::InvalidArgument("cannot read the layer " + l));
    chain += "\n" + h;
  }
  // Names are checked before the work: a bad tag does not leave an image
  // without a name behind.
  // The archive's own tags that cannot be names here are passed over (a
  // tag such as app:1.0+b1 should not stop the import; --name can name it);
  // busybox stays the built-in's.
  std::erase_if(tags, [](const std::string& t) { return t == kBusyboxName || !CheckName(t); });
  if (!name.empty())
    if (auto r = CheckName(name); !r) return Fail(r.error());
  std::string id = Sha256Hex(chain);
  fs::path image = fs::path(dir_) / "images" / id;
  if (!fs::exists(image / "rootfs")) {  // unpacked once per content
    fs::path rootfs = tmp / "rootfs";
    fs::create_directories(rootfs);
    fs::path root = fs::canonical(rootfs);
    for (const auto& l : layers) {
      if (l.empty()) return Fail(Error::InvalidArgument("bad layer path"));
      if (auto r = ApplyLayer((tmp / "archive" / l).string(), root, &budget); !r)
        return Fail(r.error());
    }
    if (auto r = Store(rootfs, image); !r) return Fail(r.error());
  }
  WriteRunConfig(config, image);
  for (const auto& t : tags)
    if (auto r = Name(t, id); !r) return Fail(r.error());
  if (auto r = Name(name, id); !r) return Fail(r.error());
  return Find(id);
}

Result<void> ImageStore::Store(const fs::path& rootfs, const fs::path& image) {
  std::error_code ec;
  fs::create_directories(image, ec);
  fs::rename(rootfs, image / "rootfs", ec);
  // An import of the same image at the same time got there first: the same
  // content, already in place.
  if (ec && fs::is_directory(image / "rootfs")) return Ok();
  if (ec) return Fail(Error::Internal("cannot store the image: " + ec.message()));
  return Ok();
}

Result<ImageInfo> ImageStore::ImportRootfs(const std::string& tarball, const std::string& name) {
  if (name == kBusyboxName)
    return Fail(Error::InvalidArgument("busybox is the name of the built-in image"));
  try {
    return ImportRootfsTarball(tarball, name);
  } catch (const std::exception& e) {
    return Fail(Error::InvalidArgument(std::string("cannot import the tarball: ") + e.what()));
  }
}

Result<ImageInfo> ImageStore::ImportRootfsTarball(const std::string& tarball,
                                                  const std::string& name) {
  MakePrivate(dir_);
  SweepScratch();
  std::string id = Sha256FileHex(tarball);
  if (id.empty()) return Fail(Error::InvalidArgument("cannot read " + tarball));
  fs::path image = fs::path(dir_) / "images" / id;
  std::error_code ec;
  if (!fs::exists(image / "rootfs")) {
    fs::path tmp = fs::path(dir_) / ("tmp-" + RandomHex(8));
    RemovedAtExit cleanup{tmp};
    fs::create_directories(tmp / "rootfs", ec);
    Budget budget = ImportBudget(dir_, max_import_bytes_);
    if (auto r = ApplyLayer(tarball, fs::canonical(tmp / "rootfs"), &budget); !r)
      return Fail(r.error());
    if (auto r = Store(tmp / "rootfs", image); !r) return Fail(r.error());
  }
  if (auto r = Name(name, id); !r) return Fail(r.error());
  return Find(id);
}

Result<ImageInfo> ImageStore::Busybox() {
  if (auto found = Find("busybox")) return found;
  MakePrivate(dir_);
  fs::path tmp = fs::path(dir_) / ("tmp-" + RandomHex(8));
  if (auto r = BuildBusyboxRootfs((tmp / "rootfs").string()); !r) return Fail(r.error());
  std::string id = Sha256Hex("kiln-builtin-busybox-" + ReadFile("/bin/busybox").substr(0, 4096));
  fs::path image = fs::path(dir_) / "images" / id;
  std::error_code ec;
  fs::remove_all(image, ec);
  fs::create_directories(image, ec);
  fs::rename(tmp / "rootfs", image / "rootfs", ec);
  fs::remove_all(tmp, ec);
  if (ec) return Fail(Error::Internal("cannot store the busybox image: " + ec.message()));
  if (auto r = Name("busybox", id); !r) return Fail(r.error());
  return Find(id);
}

Result<ImageInfo> ImageStore::Find(const std::string& name_or_id) const {
  auto missing = [&] { return Fail(Error::NotFound("Image not found: " + name_or_id)); };
  if (!IsImageName(name_or_id)) return missing();
  std::string id = name_or_id;
  std::string file = name_or_id;
  for (auto& c : file)
    if (c == '/') c = '%';
  std::error_code ec;
  fs::path named = fs::path(dir_) / "names" / file;
  if (fs::is_regular_file(named, ec)) {
    id = ReadFile(named);
  } else if (name_or_id.size() >= 4 && name_or_id.size() < 64 && IsHex(name_or_id)) {
    // The start of an id (`image ls` shows 12 hex), when one image's alone.
    std::string found;
    for (auto& i : fs::directory_iterator(fs::path(dir_) / "images", ec)) {
      std::string name = i.path().filename().string();
      if (name.rfind(name_or_id, 0) != 0) continue;
      if (!found.empty())
        return Fail(Error::InvalidArgument("more than one image id starts with " + name_or_id));
      found = name;
    }
    if (!found.empty()) id = found;
  }
  fs::path image = fs::path(dir_) / "images" / id;
  if (!IsImageId(id) || !fs::is_directory(image / "rootfs", ec)) return missing();
  ImageInfo info{id, {}, (image / "rootfs").string(), {}, {}, {}};
  if (fs::is_regular_file(image / "run.json", ec)) {
    rapidjson::Document run;
    std::string text = ReadFile(image / "run.json");
    run.Parse(text.data(), text.size());
    auto strings = [&](const char* key, std::vector<std::string>* out) {
      auto v = run.IsObject() ? run.FindMember(key) : run.MemberEnd();
      if (!run.IsObject() || v == run.MemberEnd() || !v->value.IsArray()) return;
      for (const auto& x : v->value.GetArray())
        if (x.IsString()) out->emplace_back(x.GetString(), x.GetStringLength());
    };
    std::vector<std::string> env;
    strings("Entrypoint", &info.entrypoint);
    strings("Cmd", &info.cmd);
    strings("Env", &env);
    for (const auto& e : env)
      if (size_t eq = e.find('='); eq != std::string::npos && eq > 0)
        info.env.emplace_back(e.substr(0, eq), e.substr(eq + 1));
  }
  for (auto& n : fs::directory_iterator(fs::path(dir_) / "names", ec)) {
    if (ReadFile(n.path()) != id) continue;
    std::string name = n.path().filename().string();
    for (auto& c : name)
      if (c == '%') c = '/';
    info.names.push_back(name);
  }
  return info;
}

std::vector<ImageInfo> ImageStore::List() const {
  std::vector<ImageInfo> out;
  std::error_code ec;
  for (auto& i : fs::directory_iterator(fs::path(dir_) / "images", ec))
    if (auto info = Find(i.path().filename().string())) out.push_back(std::move(*info));
  return out;
}

ImageLease& ImageLease::operator=(ImageLease&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(o.fd_, -1);
  }
  return *this;
}

ImageLease::~ImageLease() {
  if (fd_ >= 0) close(fd_);  // and with it the flock
}

Result<ImageLease> ImageStore::Lease(const ImageInfo& image) const {
  fs::path dir = fs::path(dir_) / "images" / image.id;
  int fd = open((dir / "lock").c_str(), O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Fail(Error::NotFound("Image not found: " + image.id));
  ImageLease lease(fd);
  if (flock(fd, LOCK_SH) != 0)
    return Fail(Error::Internal("cannot hold the image " + image.id + ": " + strerror(errno)));
  // A removal that held the lock first has taken the files away.
  std::error_code ec;
  if (!fs::is_directory(dir / "rootfs", ec))
    return Fail(Error::NotFound("Image not found: " + image.id));
  return lease;
}

Result<bool> ImageStore::Remove(const std::string& name_or_id) {
  auto info = Find(name_or_id);
  if (!info) return Fail(info.error());
  std::error_code ec;
  auto name_file = [&](std::string n) {
    for (auto& c : n)
      if (c == '/') c = '%';
    return fs::path(dir_) / "names" / n;
  };
  bool by_name = std::find(info->names.begin(), info->names.end(), name_or_id) != info->names.end();
  if (by_name && info->names.size() > 1) {  // one tag of several: untagged
    fs::remove(name_file(name_or_id), ec);
    if (ec) return Fail(Error::Internal("cannot remove the name: " + ec.message()));
    return false;
  }
  fs::path dir = fs::path(dir_) / "images" / info->id;
  int fd = open((dir / "lock").c_str(), O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0)
    return Fail(Error::Internal("cannot lock the image " + info->id + ": " + strerror(errno)));
  ImageLease held(fd);  // closed, and so unlocked, on return
  if (flock(fd, LOCK_EX | LOCK_NB) != 0)
    return Fail(Error::Unavailable("image " + info->id.substr(0, 12) +
                                   " is in use by a running task: remove it once that ends"));
  for (const auto& n : info->names) fs::remove(name_file(n), ec);
  // Moved aside first, under the lock: a task that comes for the image now
  // finds no directory (its lock file included) rather than a half-removed
  // root filesystem with a fresh lock of its own. A removal cut off here is
  // swept as scratch.
  fs::path doomed = fs::path(dir_) / ("tmp-rm-" + RandomHex(8));
  fs::rename(dir, doomed, ec);
  if (ec) return Fail(Error::Internal("cannot remove the image: " + ec.message()));
  fs::remove_all(doomed, ec);
  if (ec) return Fail(Error::Internal("cannot remove the image: " + ec.message()));
  return true;
}

}  // namespace kiln::runner
