#include "runner/image_store.h"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/ids.h"
#include "tests/support/temp_dir.h"

namespace kiln::runner {
namespace {
namespace fs = std::filesystem;

struct Entry {
  std::string path;
  char kind = 'f';   // f file, d dir, l symlink, h hard link (H: with data)
  std::string data;  // content, or link target
  int mode = 0644;
};

// Writes a tar archive of `entries` to `path`.
void WriteTar(const std::string& path, const std::vector<Entry>& entries) {
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  archive_write_open_filename(a, path.c_str());
  for (const auto& e : entries) {
    archive_entry* x = archive_entry_new();
    archive_entry_set_pathname(x, e.path.c_str());
    archive_entry_set_perm(x, e.mode);
    if (e.kind == 'd') {
      archive_entry_set_filetype(x, AE_IFDIR);
      archive_entry_set_perm(x, 0755);
    } else if (e.kind == 'l') {
      archive_entry_set_filetype(x, AE_IFLNK);
      archive_entry_set_symlink(x, e.data.c_str());
    } else if (e.kind == 'h') {
      archive_entry_set_filetype(x, AE_IFREG);
      archive_entry_set_hardlink(x, e.data.c_str());
    } else if (e.kind == 'H') {  // a hard link with data of its own (pax allows it)
      archive_entry_set_filetype(x, AE_IFREG);
      archive_entry_set_hardlink(x, e.data.c_str());
      archive_entry_set_size(x, static_cast<la_int64_t>(e.data.size()));
    } else {
      archive_entry_set_filetype(x, AE_IFREG);
      archive_entry_set_size(x, static_cast<la_int64_t>(e.data.size()));
    }
    archive_write_header(a, x);
    if (e.kind == 'f' || e.kind == 'H') archive_write_data(a, e.data.data(), e.data.size());
    archive_entry_free(x);
  }
  archive_write_close(a);
  archive_write_free(a);
}

// One raw ustar member (header and data padded to 512 bytes), for headers
// libarchive's writer would not make: a hard link that carries data.
std::string RawTarMember(const std::string& name, char type, const std::string& link,
                         const std::string& data, int mode) {
  std::string h(512, '\0');
  auto put = [&](size_t at, const std::string& v) { h.replace(at, v.size(), v); };
  auto octal = [](uint64_t v, int width) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%0*llo", width - 1, static_cast<unsigned long long>(v));
    return std::string(buf);
  };
  put(0, name.substr(0, 99));
  put(100, octal(mode, 8));
  put(108, octal(0, 8));
  put(116, octal(0, 8));
  put(124, octal(data.size(), 12));
  put(136, octal(0, 12));
  h[156] = type;
  put(157, link.substr(0, 99));
  put(257, std::string("ustar\0", 6));
  put(263, "00");
  put(148, std::string(8, ' '));
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  put(148, octal(sum, 7) + std::string(1, '\0'));
  std::string out = h + data;
  out.resize((out.size() + 511) / 512 * 512, '\0');
  return out;
}

std::string Slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class ImageStoreTest : public ::testing::Test {
 protected:
  std::string Path(const std::string& name) { return dir_.path() + "/" + name; }

  // A docker save tarball of `layers` (each a list of entries).
  std::string DockerSave(const std::vector<std::vector<Entry>>& layers, const std::string& cfg) {
    std::vector<Entry> outer;
    std::string list;
    for (size_t i = 0; i < layers.size(); ++i) {
      std::string tar = Path("layer" + std::to_string(i) + ".tar");
      WriteTar(tar, layers[i]);
      outer.push_back({"l" + std::to_string(i) + "/layer.tar", 'f', Slurp(tar)});
      list += (i ? "," : "") + std::string("\"l") + std::to_string(i) + "/layer.tar\"";
    }
    outer.push_back({"cfg.json", 'f', cfg});
    outer.push_back(
        {"manifest.json", 'f',
         "[{\"Config\":\"cfg.json\",\"RepoTags\":[\"demo/app:1\"],\"Layers\":[" + list + "]}]"});
    std::string out = Path("image-" + RandomHex(4) + ".tar");
    WriteTar(out, outer);
    return out;
  }

  testing::TempDir dir_;
  ImageStore store_{dir_.path() + "/store"};
};

TEST_F(ImageStoreTest, DockerSaveLayersWithWhiteoutsLinksAndModes) {
  auto archive = DockerSave({{{"etc", 'd'},
                              {"etc/a", 'f', "a1"},
                              {"etc/b", 'f', "b"},
                              {"keep", 'd'},
                              {"keep/old", 'f', "old"},
                              {"bin", 'd'},
                              {"bin/tool", 'f', "#!/bin/sh\n", 0755},
                              {"bin/link", 'l', "tool"},
                              {"bin/hard", 'h', "bin/tool"}},
                             {{"etc/.wh.b", 'f', ""},
                              {"keep/.wh..wh..opq", 'f', ""},
                              {"keep/new", 'f', "new"},
                              {"etc/a", 'f', "a2"}}},
                            "{\"config\":1}");
  auto img = store_.Import(archive, "mine:latest");
  ASSERT_TRUE(img) << img.error().message();
  fs::path root = img->rootfs;
  EXPECT_EQ(Slurp(root / "etc/a"), "a2");
  EXPECT_FALSE(fs::exists(root / "etc/b"));
  EXPECT_FALSE(fs::exists(root / "keep/old"));
  EXPECT_EQ(Slurp(root / "keep/new"), "new");
  EXPECT_FALSE(fs::exists(root / "keep/.wh..wh..opq"));
  struct stat st {};
  ASSERT_EQ(stat((root / "bin/tool").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
  EXPECT_TRUE(fs::is_symlink(root / "bin/link"));
  EXPECT_EQ(fs::read_symlink(root / "bin/link"), "tool");
  struct stat hard {};
  ASSERT_EQ(stat((root / "bin/hard").c_str(), &hard), 0);
  EXPECT_EQ(hard.st_ino, st.st_ino);

  auto by_tag = store_.Find("demo/app:1");
  ASSERT_TRUE(by_tag);
  EXPECT_EQ(by_tag->id, img->id);
  EXPECT_EQ(store_.Find("mine:latest")->id, img->id);
  EXPECT_EQ(store_.List().size(), 1u);

  auto again = store_.Import(archive);  // same content: same image, unpacked once
  ASSERT_TRUE(again);
  EXPECT_EQ(again->id, img->id);

  // One name of two goes alone; the last takes the image with it. While a
  // task holds the image it stays.
  auto untagged = store_.Remove("mine:latest");
  ASSERT_TRUE(untagged);
  EXPECT_FALSE(*untagged);
  EXPECT_FALSE(store_.Find("mine:latest"));
  ASSERT_TRUE(store_.Find("demo/app:1"));
  {
    auto lease = store_.Lease(*img);
    ASSERT_TRUE(lease) << lease.error().message();
    auto held = store_.Remove("demo/app:1");
    ASSERT_FALSE(held);
    EXPECT_EQ(held.error().code(), ErrorCode::kUnavailable);
    EXPECT_TRUE(fs::exists(root / "etc/a"));
  }
  auto removed = store_.Remove("demo/app:1");
  ASSERT_TRUE(removed) << removed.error().message();
  EXPECT_TRUE(*removed);
  EXPECT_FALSE(store_.Find("demo/app:1"));
  EXPECT_TRUE(store_.List().empty());
  EXPECT_FALSE(store_.Lease(*img));  // gone: a task that found it before fails clearly
}

// A path is resolved inside the root as the container sees it: an absolute
// symlink leads to the image's own directory of that name, never the
// host's, and ".." stops at the root.
TEST_F(ImageStoreTest, ALayerCannotWriteOutsideItsRoot) {
  fs::path outside = fs::path(dir_.path()) / "outside";
  fs::create_directories(outside);
  auto archive = DockerSave({{{"escape", 'l', outside.string()}, {"up", 'l', "../../.."}},
                             {{"escape/pwned", 'f', "x"}, {"up/upped", 'f', "y"}}},
                            "{\"config\":2}");
  auto img = store_.Import(archive);
  ASSERT_TRUE(img) << img.error().message();
  EXPECT_FALSE(fs::exists(outside / "pwned"));
  EXPECT_EQ(Slurp(fs::path(img->rootfs) / outside.relative_path() / "pwned"), "x");
  EXPECT_EQ(Slurp(fs::path(img->rootfs) / "upped"), "y");
  auto dots = DockerSave({{{"../../dotdot", 'f', "x"}}}, "{\"config\":3}");
  auto ok = store_.Import(dots);  // the entry is dropped, not written outside
  ASSERT_TRUE(ok);
  EXPECT_FALSE(fs::exists(fs::path(dir_.path()) / "dotdot"));
}

TEST_F(ImageStoreTest, OciImageLayout) {
  WriteTar(Path("oci-layer.tar"), {{"hello.txt", 'f', "hi"}});
  std::string layer = Slurp(Path("oci-layer.tar"));
  std::string config = "{\"architecture\":\"amd64\"}";
  std::string ld = Sha256Hex(layer), cd = Sha256Hex(config);
  std::string manifest = "{\"schemaVersion\":2,\"config\":{\"digest\":\"sha256:" + cd +
                         "\"},\"layers\":[{\"digest\":\"sha256:" + ld + "\"}]}";
  std::string md = Sha256Hex(manifest);
  std::string index = "{\"schemaVersion\":2,\"manifests\":[{\"digest\":\"sha256:" + md +
                      "\",\"annotations\":{\"org.opencontainers.image.ref.name\":\"oci:1\"}}]}";
  WriteTar(Path("oci.tar"), {{"oci-layout", 'f', "{\"imageLayoutVersion\":\"1.0.0\"}"},
                             {"index.json", 'f', index},
                             {"blobs/sha256/" + md, 'f', manifest},
                             {"blobs/sha256/" + cd, 'f', config},
                             {"blobs/sha256/" + ld, 'f', layer}});
  auto img = store_.Import(Path("oci.tar"));
  ASSERT_TRUE(img) << img.error().message();
  EXPECT_EQ(Slurp(fs::path(img->rootfs) / "hello.txt"), "hi");
  EXPECT_EQ(store_.Find("oci:1")->id, img->id);
}

// What buildx and `skopeo copy --all` write: index.json names an index of
// one manifest per platform, attestations beside. The host's linux/amd64
// one is taken whatever its place; the name is containerd's full one, and
// a bare ref.name tag ("latest") names nothing.
TEST_F(ImageStoreTest, ANestedIndexGivesThisHostsPlatform) {
  auto blob = [](const std::string& bytes) { return "sha256:" + Sha256Hex(bytes); };
  std::vector<Entry> entries{{"oci-layout", 'f', "{\"imageLayoutVersion\":\"1.0.0\"}"}};
  auto image = [&](const std::string& file, const std::string& content) {
    WriteTar(Path(file), {{"which", 'f', content}});
    std::string layer = Slurp(Path(file)), config = "{\"for\":\"" + content + "\"}";
    std::string manifest = "{\"schemaVersion\":2,\"config\":{\"digest\":\"" + blob(config) +
                           "\"},\"layers\":[{\"digest\":\"" + blob(layer) + "\"}]}";
    for (const auto& b : {layer, config, manifest})
      entries.push_back({"blobs/sha256/" + Sha256Hex(b), 'f', b});
    return blob(manifest);
  };
  std::string arm = image("arm.tar", "arm64"), amd = image("amd.tar", "amd64"),
              att = image("att.tar", "attestation");
  auto desc = [](const std::string& d, const std::string& os, const std::string& arch) {
    return "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" + d +
           "\",\"platform\":{\"os\":\"" + os + "\",\"architecture\":\"" + arch + "\"}}";
  };
  std::string inner = "{\"schemaVersion\":2,\"manifests\":[" + desc(arm, "linux", "arm64") + "," +
                      desc(att, "unknown", "unknown") + "," + desc(amd, "linux", "amd64") + "]}";
  entries.push_back({"blobs/sha256/" + Sha256Hex(inner), 'f', inner});
  std::string index =
      "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/"
      "vnd.oci.image.index.v1+json\",\"digest\":\"" +
      blob(inner) +
      "\",\"annotations\":{\"io.containerd.image.name\":\"docker.io/library/multi:1\","
      "\"org.opencontainers.image.ref.name\":\"1\"}}]}";
  entries.push_back({"index.json", 'f', index});
  WriteTar(Path("multi.tar"), entries);
  auto img = store_.Import(Path("multi.tar"));
  ASSERT_TRUE(img) << img.error().message();
  EXPECT_EQ(Slurp(fs::path(img->rootfs) / "which"), "amd64");
  EXPECT_EQ(img->names, std::vector<std::string>{"docker.io/library/multi:1"});
  EXPECT_FALSE(store_.Find("1"));
}

// OCI digests name blobs of the archive, checked against their bytes: one
// that points at a host file, or whose blob was changed, fails the import.
TEST_F(ImageStoreTest, OciDigestsNameOnlyTheArchivesOwnCheckedBlobs) {
  fs::path outside = fs::path(dir_.path()) / "outside.tar";
  WriteTar(outside.string(), {{"secret.txt", 'f', "host secret"}});
  std::string config = "{\"architecture\":\"amd64\"}";
  std::string cd = Sha256Hex(config);
  auto oci = [&](const std::string& layer_digest, const std::string& layer_blob,
                 const std::string& layer_bytes) {
    std::string manifest = "{\"config\":{\"digest\":\"sha256:" + cd +
                           "\"},\"layers\":[{\"digest\":\"" + layer_digest + "\"}]}";
    std::string md = Sha256Hex(manifest);
    std::string out = Path("oci-" + RandomHex(4) + ".tar");
    std::vector<Entry> entries = {
        {"index.json", 'f', "{\"manifests\":[{\"digest\":\"sha256:" + md + "\"}]}"},
        {"blobs/sha256/" + md, 'f', manifest},
        {"blobs/sha256/" + cd, 'f', config}};
    if (!layer_blob.empty()) entries.push_back({layer_blob, 'f', layer_bytes});
    WriteTar(out, entries);
    return out;
  };
  for (const std::string& d :
       std::vector<std::string>{outside.parent_path().string() + ":outside.tar", "/etc:passwd",
                                "sha256:../../outside.tar", "sha512:abc"}) {
    auto img = store_.Import(oci(d, "", ""));
    EXPECT_FALSE(img) << d;
  }
  WriteTar(Path("good-layer.tar"), {{"hello.txt", 'f', "hi"}});
  std::string layer = Slurp(Path("good-layer.tar"));
  std::string ld = Sha256Hex(layer);
  std::string changed = layer;
  changed[600] ^= 1;
  EXPECT_FALSE(store_.Import(oci("sha256:" + ld, "blobs/sha256/" + ld, changed)));
  auto img = store_.Import(oci("sha256:" + ld, "blobs/sha256/" + ld, layer));
  ASSERT_TRUE(img) << img.error().message();
  EXPECT_FALSE(fs::exists(fs::path(img->rootfs) / "secret.txt"));
}

// An image is its config and its layers: an archive that copies another
// one's config with layers of its own is a different image, and an
// archive's tag cannot take the built-in busybox's name.
TEST_F(ImageStoreTest, TheSameConfigWithOtherLayersIsAnotherImageAndBusyboxKeepsItsName) {
  auto evil = store_.Import(DockerSave({{{"who", 'f', "evil"}}}, "{\"config\":9}"));
  auto good = store_.Import(DockerSave({{{"who", 'f', "good"}}}, "{\"config\":9}"));
  ASSERT_TRUE(evil && good);
  EXPECT_NE(evil->id, good->id);
  EXPECT_EQ(Slurp(fs::path(good->rootfs) / "who"), "good");
  EXPECT_FALSE(store_.Import(DockerSave({{{"x", 'f', "x"}}}, "{}"), "busybox"));
  std::vector<Entry> outer = {
      {"l/layer.tar", 'f', Slurp(Path("layer0.tar"))},
      {"cfg.json", 'f', "{\"config\":10}"},
      {"manifest.json", 'f',
       "[{\"Config\":\"cfg.json\",\"RepoTags\":[\"busybox\"],\"Layers\":[\"l/layer.tar\"]}]"}};
  WriteTar(Path("tagged.tar"), outer);
  ASSERT_TRUE(store_.Import(Path("tagged.tar")));
  EXPECT_FALSE(store_.Find("busybox"));  // not taken by the archive
}

// Names are looked up before ids: an archive whose tag is another image's id
// would make that id lead to its own files. Such a tag is not taken, such a
// --name refused.
// The store itself is for root only (images keep setuid files and owners).
TEST_F(ImageStoreTest, ANameCannotBeAnImageIdAndOnlyRootEntersTheStore) {
  auto good = store_.Import(DockerSave({{{"who", 'f', "good"}}}, "{\"config\":1}"));
  ASSERT_TRUE(good) << good.error().message();
  EXPECT_EQ(fs::status(dir_.path() + "/store").permissions(), fs::perms::owner_all);
  std::vector<Entry> outer = {{"l/layer.tar", 'f', Slurp(Path("layer0.tar"))},
                              {"cfg.json", 'f', "{\"config\":2}"},
                              {"manifest.json", 'f',
                               "[{\"Config\":\"cfg.json\",\"RepoTags\":[\"" + good->id +
                                   "\"],\"Layers\":[\"l/layer.tar\"]}]"}};
  WriteTar(Path("hiding.tar"), outer);
  auto hiding = store_.Import(Path("hiding.tar"));  // imported, without that tag
  ASSERT_TRUE(hiding) << hiding.error().message();
  EXPECT_TRUE(hiding->names.empty());
  auto named = store_.Import(DockerSave({{{"x", 'f', "x"}}}, "{\"config\":3}"), good->id);
  ASSERT_FALSE(named);
  EXPECT_NE(named.error().message().find("cannot be an image id"), std::string::npos)
      << named.error().message();
  EXPECT_EQ(Slurp(fs::path(store_.Find(good->id)->rootfs) / "who"), "good");
}

// A hard link to a symlink that points at a host file, carrying data and a
// mode: the host file keeps its mode and content, and the link is made as
// the symlink again (inside the image, where it leads nowhere on the host).
TEST_F(ImageStoreTest, AHardLinkToASymlinkDoesNotReachTheHost) {
  fs::path outside = fs::path(dir_.path()) / "host-file";
  std::ofstream(outside) << "host";
  fs::permissions(outside, fs::perms::owner_read | fs::perms::owner_write,
                  fs::perm_options::replace);
  // The layer by hand: s -> the host file; then h, a hard link to s with a
  // pax size, one byte of data and mode 4777.
  std::string layer = RawTarMember("s", '2', outside.string(), "", 0777) +
                      RawTarMember("PaxHeaders/h", 'x', "", "10 size=1\n", 0644) +
                      RawTarMember("h", '1', "s", "x", 04777) + std::string(1024, '\0');
  std::vector<Entry> outer{
      {"l/layer.tar", 'f', layer},
      {"cfg.json", 'f', "{\"config\":\"hl\"}"},
      {"manifest.json", 'f', "[{\"Config\":\"cfg.json\",\"Layers\":[\"l/layer.tar\"]}]"}};
  WriteTar(Path("hardlink.tar"), outer);
  auto img = store_.Import(Path("hardlink.tar"));
  ASSERT_TRUE(img) << img.error().message();
  struct stat st {};
  ASSERT_EQ(stat(outside.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(Slurp(outside), "host");
  EXPECT_TRUE(fs::is_symlink(fs::path(img->rootfs) / "h"));
}

// Debian images have var/run -> /run: a later layer's var/run/x goes to the
// image's run/x. A directory over a symlink replaces the symlink: its files
// do not land where the symlink pointed. A whiteout through a symlinked
// parent removes the image's file.
TEST_F(ImageStoreTest, SymlinksAreFollowedInsideTheImageAndReplacedByDirectories) {
  auto img = store_.Import(DockerSave({{{"run", 'd'},
                                        {"var", 'd'},
                                        {"var/run", 'l', "/run"},
                                        {"usr", 'd'},
                                        {"usr/lib", 'd'},
                                        {"usr/lib/orig", 'f', "o"},
                                        {"lib", 'l', "usr/lib"},
                                        {"run/gone", 'f', "g"}},
                                       {{"var/run/app.pid", 'f', "42"},
                                        {"lib", 'd'},
                                        {"lib/new", 'f', "n"},
                                        {"var/run/.wh.gone", 'f', ""}}},
                                      "{\"config\":\"links\"}"));
  ASSERT_TRUE(img) << img.error().message();
  fs::path root = img->rootfs;
  EXPECT_EQ(Slurp(root / "run/app.pid"), "42");
  EXPECT_TRUE(fs::is_symlink(root / "var/run"));
  EXPECT_FALSE(fs::exists(root / "run/gone"));
  EXPECT_FALSE(fs::is_symlink(root / "lib"));
  EXPECT_EQ(Slurp(root / "lib/new"), "n");
  EXPECT_FALSE(fs::exists(root / "usr/lib/new"));
  EXPECT_EQ(Slurp(root / "usr/lib/orig"), "o");
}

// Older docker save writes a layer it has twice as a symlink to the first.
TEST_F(ImageStoreTest, ADockerSaveLayerThatIsASymlinkToAnotherIsRead) {
  WriteTar(Path("shared.tar"), {{"same", 'f', "s"}});
  WriteTar(Path("top.tar"), {{"top", 'f', "t"}});
  WriteTar(Path("linked.tar"),
           {{"a/layer.tar", 'f', Slurp(Path("shared.tar"))},
            {"b/layer.tar", 'f', Slurp(Path("top.tar"))},
            {"c/layer.tar", 'l', "../a/layer.tar"},
            {"cfg.json", 'f', "{\"config\":\"linked\"}"},
            {"manifest.json", 'f',
             "[{\"Config\":\"cfg.json\",\"Layers\":[\"a/layer.tar\",\"b/layer.tar\","
             "\"c/layer.tar\"]}]"}});
  auto img = store_.Import(Path("linked.tar"), "linked:1");
  ASSERT_TRUE(img) << img.error().message();
  EXPECT_EQ(Slurp(fs::path(img->rootfs) / "same"), "s");
  EXPECT_EQ(Slurp(fs::path(img->rootfs) / "top"), "t");
}

// The id hashes the config on its own: a config made to end with another
// image's first layer hash, over that image's other layers, is another id,
// and importing it first does not leave that image without its base.
TEST_F(ImageStoreTest, AConfigCannotBorrowAnotherImagesLayersToTakeItsId) {
  WriteTar(Path("base.tar"), {{"base", 'f', "b"}});
  WriteTar(Path("app.tar"), {{"app", 'f', "a"}});
  std::string base = Slurp(Path("base.tar")), app = Slurp(Path("app.tar"));
  auto save = [&](const std::string& file, const std::string& cfg,
                  std::vector<std::pair<std::string, std::string>> layers) {
    std::vector<Entry> outer{{"cfg.json", 'f', cfg}};
    std::string list;
    for (auto& [n, bytes] : layers) {
      outer.push_back({n, 'f', bytes});
      list += (list.empty() ? "\"" : ",\"") + n + "\"";
    }
    outer.push_back(
        {"manifest.json", 'f', "[{\"Config\":\"cfg.json\",\"Layers\":[" + list + "]}]"});
    WriteTar(Path(file), outer);
    return Path(file);
  };
  std::string cfg = "{\"victim\":1}";
  auto forged = store_.Import(
      save("forged.tar", cfg + "\n" + Sha256Hex(base), {{"l1/layer.tar", app}}), "forged:1");
  auto victim = store_.Import(
      save("victim.tar", cfg, {{"l0/layer.tar", base}, {"l1/layer.tar", app}}), "victim:1");
  ASSERT_TRUE(forged && victim);
  EXPECT_NE(forged->id, victim->id);
  EXPECT_EQ(Slurp(fs::path(store_.Find("victim:1")->rootfs) / "base"), "b");
}

// `image ls` shows 12 hex of an id: that, or any start of one id alone,
// finds it. A bad --name fails the import before anything is stored; an
// archive's own bad tag is passed over.
TEST_F(ImageStoreTest, AnIdsStartFindsItAndABadTagStoresNothing) {
  auto img = store_.Import(DockerSave({{{"x", 'f', "x"}}}, "{\"config\":\"short\"}"));
  ASSERT_TRUE(img);
  auto found = store_.Find(img->id.substr(0, 12));
  ASSERT_TRUE(found) << found.error().message();
  EXPECT_EQ(found->id, img->id);
  EXPECT_FALSE(store_.Find("zzzz"));
  ASSERT_TRUE(store_.Remove(img->id.substr(0, 12)));
  EXPECT_TRUE(store_.List().empty());
  WriteTar(
      Path("badtag.tar"),
      {{"l/layer.tar", 'f', Slurp(Path("layer0.tar"))},
       {"cfg.json", 'f', "{\"config\":\"badtag\"}"},
       {"manifest.json", 'f',
        "[{\"Config\":\"cfg.json\",\"RepoTags\":[\"bad tag!\"],\"Layers\":[\"l/layer.tar\"]}]"}});
  auto untagged = store_.Import(Path("badtag.tar"));  // the archive's bad tag is passed over
  ASSERT_TRUE(untagged) << untagged.error().message();
  EXPECT_TRUE(untagged->names.empty());
  ASSERT_TRUE(store_.Remove(untagged->id));
  EXPECT_FALSE(store_.Import(Path("badtag.tar"), "bad name!"));  // --name is not
  EXPECT_TRUE(store_.List().empty());
}

// Whiteouts of nothing (".wh.", ".wh..", ".wh...") and outer archives that
// cannot be unpacked fail the import cleanly, leaving no scratch files.
TEST_F(ImageStoreTest, MalformedLayersAndArchivesFailCleanly) {
  for (const char* w : {"a/.wh.", "a/.wh..", "a/.wh...", ".wh..."}) {
    auto img = store_.Import(DockerSave({{{"a", 'd'}, {"a/f", 'f', "x"}}, {{w, 'f', ""}}},
                                        std::string("{\"w\":\"") + w + "\"}"));
    EXPECT_FALSE(img) << w;
  }
  std::string deep;
  for (int i = 0; i < 200; ++i) deep += "d/";
  EXPECT_FALSE(store_.Import(DockerSave({{{deep + "f", 'f', "x"}}}, "{\"deep\":1}")));
  WriteTar(Path("clash.tar"), {{"blobs/x", 'f', "file"}, {"blobs/x/y", 'f', "under a file"}});
  EXPECT_FALSE(store_.Import(Path("clash.tar")));
  for (const auto& e : fs::directory_iterator(dir_.path() + "/store"))
    EXPECT_NE(e.path().filename().string().rfind("tmp-", 0), 0u) << e.path();
}

// Scratch left by a killed import or stack build goes at a later import
// once a day old; a younger one may be another import's, and stays.
TEST_F(ImageStoreTest, ScratchADayOldIsSweptAtTheNextImport) {
  fs::path store = dir_.path() + "/store";
  fs::create_directories(store / "tmp-old" / "rootfs");
  fs::create_directories(store / "tmp-young");
  std::ofstream(store / "stack-old.tar") << "partial";
  auto two_days_ago = fs::file_time_type::clock::now() - std::chrono::hours(48);
  fs::last_write_time(store / "tmp-old", two_days_ago);
  fs::last_write_time(store / "stack-old.tar", two_days_ago);
  ASSERT_TRUE(store_.Import(DockerSave({{{"x", 'f', "x"}}}, "{\"config\":\"sweep\"}")));
  EXPECT_FALSE(fs::exists(store / "tmp-old"));
  EXPECT_FALSE(fs::exists(store / "stack-old.tar"));
  EXPECT_TRUE(fs::exists(store / "tmp-young"));
}

// An import writes no more than it may (here a store limit; on a real disk
// its free space less a reserve): a small compressed archive cannot fill
// the disk. Whether the archive or its unpacked layers pass the limit, the
// import fails and leaves nothing.
TEST_F(ImageStoreTest, AnImportThatWouldWriteTooMuchFailsAndLeavesNothing) {
  std::string big(200 * 1024, 'x');
  auto archive = DockerSave({{{"big", 'f', big}}}, "{\"config\":\"big\"}");
  for (int64_t limit : {100 * 1024, 300 * 1024}) {  // the archive; then the unpacked layer
    ImageStore small(dir_.path() + "/small", limit);
    auto img = small.Import(archive, "big:1");
    ASSERT_FALSE(img) << limit;
    EXPECT_NE(img.error().message().find("more than this import may write"), std::string::npos)
        << img.error().message();
    EXPECT_TRUE(small.List().empty());
    for (const auto& e : fs::directory_iterator(dir_.path() + "/small"))
      EXPECT_NE(e.path().filename().string().rfind("tmp-", 0), 0u) << e.path();
  }
  ImageStore enough(dir_.path() + "/enough", 1 << 20);
  EXPECT_TRUE(enough.Import(archive, "big:1"));
}

TEST_F(ImageStoreTest, NotAnImage) {
  WriteTar(Path("plain.tar"), {{"readme", 'f', "x"}});
  EXPECT_FALSE(store_.Import(Path("plain.tar")));
  EXPECT_FALSE(store_.Import(Path("missing.tar")));
  EXPECT_FALSE(store_.Find("nope"));
}

}  // namespace
}  // namespace kiln::runner
