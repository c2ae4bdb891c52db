// Command pause holds a pod sandbox open: it sleeps until SIGINT or SIGTERM, then exits 0.
// As PID 1 of a sandbox it gets no default signal handlers, so it must catch them itself.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
}
