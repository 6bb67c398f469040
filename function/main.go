// Command function is a Lightspeed edge worker: it connects to the gateway
// over the QUIC relay and fans channels out to browsers over WebRTC.
//
//	go run ./function            join the gateway on this machine
//	go run ./function --help     list every setting
package main

import (
	"errors"
	"fmt"
	"os"

	"lightspeed/function/app"
	"lightspeed/shared/envconfig"
)

func main() {
	if err := app.Main(os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, envconfig.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "function:", err)
		os.Exit(1)
	}
}
