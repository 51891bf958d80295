// musterctl: the command-line client.  Commands are in ctl/commands.cpp.
#include <iostream>

#include "ctl/command.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  const int status = muster::ctl::run_musterctl(args, std::cout, std::cerr);
  std::cout.flush();
  return status;
}
