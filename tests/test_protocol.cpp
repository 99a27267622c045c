// Tests: protocol (see the issue 12 notes in the file).
#include <doctest/doctest.h>
