// Command ctcr checkpoints and restores Linux processes and containers.
package main

func main() {}
