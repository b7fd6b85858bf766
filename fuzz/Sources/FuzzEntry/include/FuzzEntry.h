// Entry points for the fuzz executables; see entry.c.
#pragma once
