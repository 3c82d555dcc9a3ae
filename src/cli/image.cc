// `kiln image import|ls|rm`: the image store in DATA/images, used directly
// (images are files, not API objects).

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "cli/args.h"
#include "cli/cli.h"
#include "runner/image_store.h"

namespace kiln::cli {

void NoteDataDir(const std::string& data) {
  std::error_code ec;
  if (std::filesystem::exists(std::filesystem::path(data) / "admin.token", ec)) return;
  std::fprintf(stderr,
               "kiln: note: %s is no Kiln server's data dir yet (no admin.token): its images "
               "are for a server started with --data %s\n",
               data.c_str(), data.c_str());
}

void AddImageCommands(CLI::App& app) {
  auto data = std::make_shared<std::string>("data");
  auto file = std::make_shared<std::string>();
  auto name = std::make_shared<std::string>();
  auto* image = app.add_subcommand("image", "Container images for tasks");
  image->require_subcommand(1);
  image->fallthrough();
  image->add_option("--data", *data, "Data directory of the Kiln server")->envname("KILN_DATA");
  auto store = [data] {
    NoteDataDir(*data);
    return runner::ImageStore(*data + "/images");
  };

  auto* import =
      image->add_subcommand("import", "Import an OCI image archive or a docker save tarball");
  import->add_option("file", *file, "The archive")->required()->check(kNonEmpty);
  import->add_option("--name", *name, "A name for it (repo:tag)");
  import->callback([=] {
    auto img = store().Import(*file, *name);
  if (!img) {
    std::fprintf(stderr, "kiln: %s\n", img.error().message().c_str());
    std::exit(1);
  }
  std::printf("%s", img->id.c_str());
  for (const auto& n : img->names) std::printf("  %s", n.c_str());
  std::printf("\n");
  std::exit(0);
});

image->add_subcommand("ls", "List images")->callback([=] {
  for (const auto& img : store().List()) {
    std::printf("%.12s", img.id.c_str());
    for (const auto& n : img.names) std::printf("  %s", n.c_str());
    std::printf("\n");
  }
  std::exit(0);
});

auto* rm =
    image->add_subcommand("rm", "Remove a name of an image, or the image (by id or its last name)");
rm->add_option("image", *name, "Name or id")->required()->check(kNonEmpty);
rm->callback([=] {
  auto r = store().Remove(*name);
  if (!r) {
    std::fprintf(stderr, "kiln: %s\n", r.error().message().c_str());
    std::exit(1);
  }
  std::printf("%s %s\n", *r ? "removed" : "untagged", name->c_str());
  std::exit(0);
});
}  // namespace kiln::cli

}  // namespace kiln::cli
