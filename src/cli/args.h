// Checks shared by the commands' arguments (CLI11 validators). Internal to
// src/cli.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace kiln::cli {

// An argument that names something (a queue, a message, a task) cannot be
// empty: a script's unset variable in `kiln mq delete q "$ID"` would make
// the request reach another endpoint (the queue's clear, say).
inline const CLI::Validator kNonEmpty(
    [](std::string& s) { return s.empty() ? std::string("must not be empty") : std::string(); },
    "NOT EMPTY", "NonEmpty");

// NAME=VALUE (--subscriber, --env): an '=' after a non-empty name.
inline const CLI::Validator kNameEqualsValue(
    [](std::string& s) {
      size_t eq = s.find('=');
      return eq == std::string::npos || eq == 0 ? std::string("wants NAME=VALUE, got " + s)
                                                : std::string();
    },
    "NAME=VALUE", "NameEqualsValue");

}  // namespace kiln::cli
