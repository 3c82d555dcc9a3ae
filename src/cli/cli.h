// The command-line client: `kiln mq ...`, `kiln project ...`, `kiln token ...`.
// Each Add* registers a noun's subcommands on the top-level CLI11 app.
#pragma once

namespace CLI {
class App;
}

namespace kiln::cli {

void AddMqCommands(CLI::App& app);
void AddAdminCommands(CLI::App& app);
void AddImageCommands(CLI::App& app);
void AddWorkerCommands(CLI::App& app);  // worker, task, schedule
void AddStackCommands(CLI::App& app);

}  // namespace kiln::cli
