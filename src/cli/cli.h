// The command-line client: `kiln mq ...`, `kiln project ...`, `kiln token ...`.
// Each Add* registers a noun's subcommands on the top-level CLI11 app.
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace kiln::cli {

void AddMqCommands(CLI::App& app);
void AddAdminCommands(CLI::App& app);
void AddImageCommands(CLI::App& app);
void AddWorkerCommands(CLI::App& app);  // worker, task, schedule
void AddStackCommands(CLI::App& app);

// For the commands that use DATA/images directly (image, stack): a note on
// stderr when `data` is not yet a server's data dir (no admin.token), such
// as ./data of a directory the user did not mean (--data left out).
void NoteDataDir(const std::string& data);

}  // namespace kiln::cli
