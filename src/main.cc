#include "tollgate/app/cli.h"

int main(int argc, char** argv) { return tollgate::app::run_cli(argc, argv); }
