// The image store: images imported from OCI image archives or `docker save`
// tarballs, each unpacked once into a root filesystem under
// DIR/images/<id>/rootfs (id: SHA-256 of the hashes of the image's config
// and of its layers), with names (repo:tag) in DIR/names. OCI blobs are checked
// against their sha256 digests. Layers are applied in order with whiteouts
// (.wh.NAME, .wh..wh..opq), symlinks, hard links, modes and owners; device
// nodes are skipped; paths are resolved inside the root filesystem as the
// container will see them (symlinks, absolute ones too, never lead out). "busybox" names the
// built-in image only: an archive's tag of that name is not taken. Not thread-safe: one importer at
// a time per directory.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/error.h"

namespace kiln::runner {

struct ImageInfo {
  std::string id;                  // 64 hex
  std::vector<std::string> names;  // repo:tag
  std::string rootfs;              // absolute path
  // From the image's config (empty for stacks and busybox): what a code
  // without a command runs, and the environment it starts with.
  std::vector<std::string> entrypoint, cmd;
  std::vector<std::pair<std::string, std::string>> env;
};

// Whether `name` may name an image (repo:tag, a stack, or an image id):
// 1-255 bytes of letters, digits and . _ - : / @, not starting with . or /,
// no "..". Names come from users (a code's image or stack), and name files
// and directories of the store.
bool IsImageName(std::string_view name);

// A running task's hold on its image (a shared flock on the image's lock
// file, across processes): `kiln image rm` refuses an image held so, since
// removing an overlay's lower layer under a running container makes its
// files vanish mid-run. Released when destroyed.
class ImageLease {
 public:
  ImageLease() = default;
  explicit ImageLease(int fd) : fd_(fd) {}
  ImageLease(ImageLease&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  ImageLease& operator=(ImageLease&& o) noexcept;
  ImageLease(const ImageLease&) = delete;
  ImageLease& operator=(const ImageLease&) = delete;
  ~ImageLease();

 private:
  int fd_ = -1;
};

class ImageStore {
 public:
  // An import writes at most `max_import_bytes` (outer archive and root
  // filesystem together), and never past the disk's free space less 5% of
  // the disk (at most 1 GiB).
  explicit ImageStore(std::string dir, int64_t max_import_bytes = INT64_MAX)
      : dir_(std::move(dir)), max_import_bytes_(max_import_bytes) {}

  // Imports `archive`. `name` (repo:tag) is added to the archive's own tags.
  // InvalidArgument for an archive that is not an image or is unsafe.
  Result<ImageInfo> Import(const std::string& archive, const std::string& name = "");
  // Imports a plain root filesystem tarball (one layer, e.g. made by
  // mmdebstrap) under `name`.
  Result<ImageInfo> ImportRootfs(const std::string& tarball, const std::string& name);
  // The built-in "busybox" image, built from Debian's busybox-static on first use.
  Result<ImageInfo> Busybox();
  Result<ImageInfo> Find(const std::string& name_or_id) const;  // NotFound
  std::vector<ImageInfo> List() const;
  // A name of an image that has others loses that name only (false); an
  // id, or an image's last name, removes the image and its names (true).
  // Unavailable while a task holds the image (Lease).
  Result<bool> Remove(const std::string& name_or_id);
  // Holds `image` for a task. NotFound when it was removed meanwhile.
  Result<ImageLease> Lease(const ImageInfo& image) const;

 private:
  Result<ImageInfo> ImportArchive(const std::string& archive, const std::string& name);
  Result<ImageInfo> ImportRootfsTarball(const std::string& tarball, const std::string& name);
  // Removes scratch (tmp-*, stack-*) a day old: left by a killed import.
  void SweepScratch() const;
  static Result<void> CheckName(const std::string& name);  // InvalidArgument
  Result<void> Name(const std::string& name, const std::string& id);
  // Moves an unpacked `rootfs` into place as `image`/rootfs.
  static Result<void> Store(const std::filesystem::path& rootfs,
                            const std::filesystem::path& image);
  std::string dir_;
  int64_t max_import_bytes_;
};

}  // namespace kiln::runner
