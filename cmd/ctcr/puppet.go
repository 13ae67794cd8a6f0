package main

import "os"

// isPuppet reports whether this process was started by restore as a
// puppet: such a process is stopped at exec and rebuilt from outside.
func isPuppet() bool { return os.Getenv("CTCR_PUPPET") == "1" }
