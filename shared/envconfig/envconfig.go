// Package envconfig loads a command's configuration from LS_ environment
// variables (github.com/caarlos0/env) and prints it for --help.
//
// A configuration is a flat struct whose fields carry `env`, `envDefault`
// and `help` tags:
//
//	HTTPAddr string `env:"HTTP_ADDR" envDefault:":8080" help:"HTTP listen address"`
package envconfig

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"text/tabwriter"

	"github.com/caarlos0/env/v10"
)

// Prefix starts every variable's name.
const Prefix = "LS_"

// ErrHelp is returned by Load when the arguments ask for help; the usage
// has been written.
var ErrHelp = errors.New("help requested")

// Load fills cfg (a pointer to a struct) from the environment. When args
// contain -h, -help or --help it writes the usage of command to w instead
// and returns ErrHelp.
func Load(cfg any, command string, args []string, w io.Writer) error {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			Usage(w, command, cfg)
			return ErrHelp
		}
	}
	err := env.ParseWithOptions(cfg, env.Options{Prefix: Prefix})
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		return nil
	}
	// Name the variable, not the Go field, in what the operator reads.
	t := structType(cfg)
	var errs []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if f, ok := t.FieldByName(pe.Name); ok {
				e = fmt.Errorf("%s%s: %w", Prefix, f.Tag.Get("env"), pe.Err)
			}
		}
		errs = append(errs, e)
	}
	return fmt.Errorf("config: %w", errors.Join(errs...))
}

func structType(cfg any) reflect.Type {
	t := reflect.TypeOf(cfg)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// Usage writes every variable of cfg with its default and meaning.
func Usage(w io.Writer, command string, cfg any) {
	fmt.Fprintf(w, "Usage: %s\n\nConfiguration is read from these environment variables:\n\n", command)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tMEANING")
	t := structType(cfg)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, ok := f.Tag.Lookup("env")
		if !ok || name == "-" {
			continue
		}
		def := f.Tag.Get("envDefault")
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\n", Prefix, name, def, f.Tag.Get("help"))
	}
	tw.Flush()
}
