package infra

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"lightspeed/gateway/scheduler"
	"lightspeed/shared/envconfig"
)

// The files checked, relative to this package's directory (where go test
// runs).
const (
	gatewayConfigPath  = "../fly.toml"
	functionConfigPath = "function.fly.toml"
	readmePath         = "README.md"
	gatewayAppDir      = "../gateway/app"
	functionAppDir     = "../function/app"
)

// Values the deployment relies on.
const (
	ftlPort        = 8084                  // OBS always uses it, TCP and UDP
	flyUDPHost     = "fly-global-services" // the only address Fly delivers public UDP to
	flyPrivateHost = "fly-local-6pn"       // the machine's private network address
)

// secrets are never values in a fly.toml: they are set with `fly secrets
// set`. LS_FLY_FUNCTION_IPV4 is not secret, but differs per deployment and
// a placeholder address would be advertised to viewers.
var secrets = []string{"FLY_API_TOKEN", "LS_ADMIN_TOKEN", "LS_RELAY_SECRET", "LS_STREAM_KEY", "LS_FLY_FUNCTION_IPV4"}

// TestAppNames checks that the two apps are distinct, that the gateway's
// fleet manages the app infra/function.fly.toml builds, and that
// infra/README.md's commands name both apps.
func TestAppNames(t *testing.T) {
	gw, fn, readme := readTOML(t, gatewayConfigPath), readTOML(t, functionConfigPath), readText(t, readmePath)
	gwApp, fnApp := gw.top().mustStr(t, "app"), fn.top().mustStr(t, "app")
	if gwApp == fnApp {
		t.Errorf("both apps are named %q: the functions need an app of their own", gwApp)
	}
	if got := gw.mustTable(t, "env").mustStr(t, "LS_FLY_FUNCTION_APP"); got != fnApp {
		t.Errorf("%s: LS_FLY_FUNCTION_APP = %q, but %s builds app %q", gatewayConfigPath, got, functionConfigPath, fnApp)
	}
	for _, want := range []string{
		"fly apps create " + gwApp,
		"fly apps create " + fnApp,
		"fly ips allocate-v4 -a " + gwApp,
		"fly ips allocate-v4 -a " + fnApp,
		"fly tokens create deploy -a " + fnApp,
		"-c infra/function.fly.toml",
	} {
		if !strings.Contains(readme, want) {
			t.Errorf("%s does not say %q: its commands and the app names of the fly.toml files disagree", readmePath, want)
		}
	}
	for _, f := range []*tomlFile{gw, fn} {
		region := f.top().mustStr(t, "primary_region")
		if _, ok := scheduler.LookupRegion(region); !ok {
			t.Errorf("%s: primary_region %q is not a Fly region the gateway knows", f.path, region)
		}
	}
}

// TestGatewayFleet checks the gateway's fleet settings: the fly provider,
// known regions that infra/README.md names, a valid minimum and port
// range, no secret as a plain value, and the relay's address left to its
// default (<gateway app>.internal).
func TestGatewayFleet(t *testing.T) {
	gw, fn, readme := readTOML(t, gatewayConfigPath), readTOML(t, functionConfigPath), readText(t, readmePath)
	env := gw.mustTable(t, "env")
	if got := env.mustStr(t, "LS_FUNCTION_PROVIDER"); got != "fly" {
		t.Errorf("LS_FUNCTION_PROVIDER = %q, want \"fly\"", got)
	}
	regions := env.mustStr(t, "LS_FUNCTION_REGIONS")
	for _, r := range strings.Split(regions, ",") {
		if _, ok := scheduler.LookupRegion(r); !ok {
			t.Errorf("LS_FUNCTION_REGIONS: %q is not a Fly region the gateway knows", r)
		}
	}
	if !strings.Contains(readme, regions) {
		t.Errorf("%s does not name the regions %q of LS_FUNCTION_REGIONS", readmePath, regions)
	}
	if v, ok := env.str("LS_FUNCTION_MIN"); ok {
		if n, err := strconv.Atoi(v); err != nil || n < 0 {
			t.Errorf("LS_FUNCTION_MIN = %q, want a whole number, 0 or more", v)
		}
	}
	if v, ok := env.str("LS_FUNCTION_UDP_PORTS"); ok {
		if _, _, err := portRange(v); err != nil {
			t.Errorf("LS_FUNCTION_UDP_PORTS: %v", err)
		}
	}
	if v, ok := env.str("LS_FUNCTION_GATEWAY_ADDR"); ok {
		t.Errorf("LS_FUNCTION_GATEWAY_ADDR = %q: functions should dial the default, <gateway app>.internal and the relay's port", v)
	}
	for _, f := range []*tomlFile{gw, fn} {
		e := f.table("env")
		if e == nil {
			continue
		}
		for _, name := range secrets {
			if _, ok := e.keys[name]; ok {
				t.Errorf("%s: [env] sets %s; set it with fly secrets set instead", f.path, name)
			}
		}
	}
	for _, name := range secrets {
		if !strings.Contains(readme, name) {
			t.Errorf("%s does not say how to set %s", readmePath, name)
		}
	}
}

// TestGatewayServices checks the gateway's public services against its
// listen addresses: FTL control on TCP 8084 through proxy_proto, FTL media
// on UDP 8084 bound to fly-global-services on the same port outside and
// inside, HTTP (and Fly's metrics scrape) on LS_HTTP_ADDR's port, and the
// relay on the private network with no public service.
func TestGatewayServices(t *testing.T) {
	gw := readTOML(t, gatewayConfigPath)
	env := gw.mustTable(t, "env")
	defaults := envDefaults(t, gatewayAppDir)
	value := func(name string) string {
		if v, ok := env.str(name); ok {
			return v
		}
		return defaults[name]
	}

	// UDP reaches only sockets bound to fly-global-services, on the port
	// it was sent to: every UDP service must have one, and the reverse.
	bound := map[int]string{}
	for _, name := range env.names() {
		if !strings.HasSuffix(name, "_ADDR") {
			continue
		}
		v, _ := env.str(name)
		if host, port, err := hostPort(v); err == nil && host == flyUDPHost {
			bound[port] = name
		}
	}
	udp := map[int]bool{}
	var tcpFTL *tomlTable
	for _, s := range gw.all("services") {
		proto, internal := s.mustStr(t, "protocol"), s.mustInt(t, "internal_port")
		ports := s.sub("ports")
		if len(ports) == 0 {
			t.Errorf("%s:%d: a %s service on %d with no [[services.ports]]", gw.path, s.line, proto, internal)
		}
		switch proto {
		case "udp":
			udp[internal] = true
			for _, p := range ports {
				if got := p.mustInt(t, "port"); got != internal {
					t.Errorf("%s:%d: UDP port %d outside, %d inside: Fly does not rewrite UDP ports", gw.path, p.line, got, internal)
				}
			}
			if _, ok := bound[internal]; !ok {
				t.Errorf("%s:%d: UDP service on %d, but no LS_*_ADDR binds %s:%d", gw.path, s.line, internal, flyUDPHost, internal)
			}
		case "tcp":
			if internal == ftlPort {
				tcpFTL = s
			}
		default:
			t.Errorf("%s:%d: protocol %q", gw.path, s.line, proto)
		}
	}
	for port, name := range bound {
		if !udp[port] {
			t.Errorf("%s binds %s:%d, but no UDP service carries that port", name, flyUDPHost, port)
		}
	}
	if _, port, _ := hostPort(value("LS_FTL_MEDIA_ADDR")); bound[ftlPort] != "LS_FTL_MEDIA_ADDR" || port != ftlPort {
		t.Errorf("LS_FTL_MEDIA_ADDR = %q, want %s:%d (OBS sends FTL media to the control port)", value("LS_FTL_MEDIA_ADDR"), flyUDPHost, ftlPort)
	}

	// FTL control: TCP 8084, PROXY protocol on both sides.
	if _, port, err := hostPort(value("LS_FTL_ADDR")); err != nil || port != ftlPort {
		t.Errorf("LS_FTL_ADDR = %q, want port %d", value("LS_FTL_ADDR"), ftlPort)
	}
	if tcpFTL == nil {
		t.Errorf("%s: no TCP service on %d for FTL control", gw.path, ftlPort)
	} else {
		for _, p := range tcpFTL.sub("ports") {
			handlers, _ := p.strs("handlers")
			if p.mustInt(t, "port") != ftlPort || !slices.Contains(handlers, "proxy_proto") {
				t.Errorf("%s:%d: FTL control wants port %d with the proxy_proto handler", gw.path, p.line, ftlPort)
			}
		}
		if v := value("LS_FTL_PROXY_PROTOCOL"); v != "true" {
			t.Errorf("LS_FTL_PROXY_PROTOCOL = %q: the proxy_proto handler puts a PROXY header in front of every FTL connection", v)
		}
	}

	// HTTP: Fly's HTTPS service and metrics scrape on the gateway's port.
	_, httpPort, err := hostPort(value("LS_HTTP_ADDR"))
	if err != nil {
		t.Fatalf("LS_HTTP_ADDR = %q: %v", value("LS_HTTP_ADDR"), err)
	}
	if got := gw.mustTable(t, "http_service").mustInt(t, "internal_port"); got != httpPort {
		t.Errorf("[http_service] internal_port %d, but the gateway serves HTTP on %d", got, httpPort)
	}
	if m := gw.table("metrics"); m != nil {
		if got := m.mustInt(t, "port"); got != httpPort {
			t.Errorf("[metrics] port %d, but the gateway serves /metrics on %d", got, httpPort)
		}
	}

	// The relay: private network only.
	host, relayPort, err := hostPort(value("LS_RELAY_ADDR"))
	if err != nil || host != flyPrivateHost {
		t.Errorf("LS_RELAY_ADDR = %q, want %s:<port>: functions reach the relay over the private network", value("LS_RELAY_ADDR"), flyPrivateHost)
	}
	for _, s := range gw.all("services") {
		if s.mustInt(t, "internal_port") == relayPort {
			t.Errorf("%s:%d: a public service on the relay's port %d", gw.path, s.line, relayPort)
		}
	}

	// The data dir is the volume: the relay's certificate, and so the
	// fingerprint function machines carry, outlive the gateway's machine.
	mounts := gw.all("mounts")
	if len(mounts) != 1 {
		t.Fatalf("%s: %d [[mounts]], want 1 (the gateway's data dir)", gw.path, len(mounts))
	}
	if dest, dir := mounts[0].mustStr(t, "destination"), value("LS_DATA_DIR"); dest != dir {
		t.Errorf("LS_DATA_DIR = %q, but the volume is mounted at %q", dir, dest)
	}
	dockerfile(t, gw)
}

// TestFunctionApp checks that the function app's file only builds the
// image: no service, so no fixed UDP port competing with each machine's own
// from LS_FUNCTION_UDP_PORTS, and no settings that would reach only
// machines the fleet did not make.
func TestFunctionApp(t *testing.T) {
	fn := readTOML(t, functionConfigPath)
	for _, s := range fn.all("services") {
		if proto, _ := s.str("protocol"); proto == "udp" {
			t.Errorf("%s:%d: a fixed UDP service: Fly routes UDP by port, and each function machine gets its own from the gateway's LS_FUNCTION_UDP_PORTS", fn.path, s.line)
		} else {
			t.Errorf("%s:%d: a %s service: functions serve nothing but their UDP port", fn.path, s.line, proto)
		}
	}
	for _, name := range []string{"http_service", "env", "metrics", "vm", "checks", "mounts"} {
		for _, tb := range fn.all(name) {
			t.Errorf("%s:%d: [%s] would shape only machines fly deploy makes; the gateway makes every function machine", fn.path, tb.line, name)
		}
	}
	dockerfile(t, fn)
}

// TestEnvNames checks that every LS_ variable the two files and
// infra/README.md name is a setting of the gateway or of the function, and
// that those in the gateway's [env] are the gateway's.
func TestEnvNames(t *testing.T) {
	gateway, function := envDefaults(t, gatewayAppDir), envDefaults(t, functionAppDir)
	name := regexp.MustCompile(`\b` + envconfig.Prefix + `[A-Z0-9_]*[A-Z0-9]\b`)
	for _, path := range []string{gatewayConfigPath, functionConfigPath, readmePath} {
		for i, line := range strings.Split(readText(t, path), "\n") {
			for _, v := range name.FindAllString(line, -1) {
				if _, ok := gateway[v]; ok {
					continue
				}
				if _, ok := function[v]; !ok {
					t.Errorf("%s:%d: %s is a setting of neither the gateway nor the function", path, i+1, v)
				}
			}
		}
	}
	gw := readTOML(t, gatewayConfigPath)
	for _, v := range gw.mustTable(t, "env").names() {
		if _, ok := gateway[v]; !ok {
			t.Errorf("%s: [env] sets %s, which the gateway does not read", gw.path, v)
		}
	}
}

// TestTOMLReader checks the reader itself on what the fly.toml files use,
// and that it refuses what it does not understand rather than misread it.
func TestTOMLReader(t *testing.T) {
	f, err := parseTOML("t.toml", `
app = "a#b" # comment
n = 1_000
[env]
  K = 'lit'
[[services]]
  protocol = "udp"
  [[services.ports]]
    port = 1
    handlers = ["x", "y",]
  [[services.ports]]
    port = 2
[[services]]
  protocol = "tcp"
`)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := f.top().str("app"); v != "a#b" {
		t.Errorf("app = %q", v)
	}
	if n, _ := f.top().integer("n"); n != 1000 {
		t.Errorf("n = %d", n)
	}
	if v, _ := f.table("env").str("K"); v != "lit" {
		t.Errorf("K = %q", v)
	}
	s := f.all("services")
	if len(s) != 2 || len(s[0].sub("ports")) != 2 || len(s[1].sub("ports")) != 0 {
		t.Fatalf("services: %d, ports of each: wrong nesting", len(s))
	}
	if h, _ := s[0].sub("ports")[0].strs("handlers"); !slices.Equal(h, []string{"x", "y"}) {
		t.Errorf("handlers = %q", h)
	}
	for _, bad := range []string{
		"a = 1.5",
		"a = {b = 1}",
		"a.b = 1",
		"a = [\n1]",
		`a = """x"""`,
		"a = 1\na = 2",
		"[t]\n[t]",
		"[[t.u]]",
		`a = "x`,
		"a",
	} {
		if _, err := parseTOML("bad.toml", bad); err == nil {
			t.Errorf("%q: read without an error", bad)
		}
	}
}

// dockerfile checks that f's [build] dockerfile exists; flyctl reads it
// relative to the file's directory.
func dockerfile(t *testing.T, f *tomlFile) {
	t.Helper()
	df := f.mustTable(t, "build").mustStr(t, "dockerfile")
	if _, err := os.Stat(filepath.Join(filepath.Dir(f.path), df)); err != nil {
		t.Errorf("%s: [build] dockerfile: %v", f.path, err)
	}
}

// envDefaults returns the settings of the Config struct declared in the Go
// package in dir: each field's env tag with envconfig's prefix, and its
// envDefault.
func envDefaults(t *testing.T, dir string) map[string]string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	out := map[string]string{}
	found := false
	for _, path := range paths {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok || ts.Name.Name != "Config" {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				return false
			}
			found = true
			for _, field := range st.Fields.List {
				if field.Tag == nil {
					continue
				}
				tag, err := strconv.Unquote(field.Tag.Value)
				if err != nil {
					t.Fatalf("%s: tag %s: %v", fset.Position(field.Pos()), field.Tag.Value, err)
				}
				if name := reflect.StructTag(tag).Get("env"); name != "" {
					out[envconfig.Prefix+name] = reflect.StructTag(tag).Get("envDefault")
				}
			}
			return false
		})
	}
	if !found || len(out) == 0 {
		t.Fatalf("%s: no Config struct with env tags", dir)
	}
	return out
}

// hostPort splits a listen address into its host and numeric port.
func hostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("port %q", p)
	}
	return host, port, nil
}

// portRange reads "first-last".
func portRange(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, "-")
	first, err1 := strconv.Atoi(a)
	last, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || first < 1 || last > 65535 || first > last {
		return 0, 0, fmt.Errorf("%q is not a port range first-last", s)
	}
	return first, last, nil
}

func readText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func readTOML(t *testing.T, path string) *tomlFile {
	t.Helper()
	f, err := parseTOML(path, readText(t, path))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// A minimal, line-oriented TOML reader: the subset the fly.toml files use.
// Tables ([a], [a.b]) and arrays of tables ([[a]], [[a.b]], nested in the
// latest [[a]]), bare keys, basic and literal strings on one line, decimal
// integers, booleans and one-line arrays of those. Anything else is an
// error, so that a construct it does not know fails the test instead of
// being misread.

// tomlFile is a read TOML file: its tables in order, the top level first.
type tomlFile struct {
	path   string
	tables []*tomlTable
}

// tomlTable is the top level (name ""), a [name] table or one element of a
// [[name]] array of tables.
type tomlTable struct {
	name     string
	array    bool
	line     int
	keys     map[string]tomlValue
	children []*tomlTable // [name.x] and [[name.x]] tables under this one
}

// tomlValue is one value.
type tomlValue struct {
	kind string // "string", "integer", "boolean" or "array"
	str  string // a string's text; an integer or boolean as written
	list []tomlValue
}

var (
	tomlKey     = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	tomlName    = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
	tomlInteger = regexp.MustCompile(`^[+-]?[0-9](_?[0-9])*$`)
)

func parseTOML(path, text string) (*tomlFile, error) {
	top := &tomlTable{keys: map[string]tomlValue{}}
	f := &tomlFile{path: path, tables: []*tomlTable{top}}
	cur := top
	tables := map[string]bool{} // [name] tables seen
	for i, raw := range strings.Split(text, "\n") {
		fail := func(format string, a ...any) error {
			return fmt.Errorf("%s:%d: %s", path, i+1, fmt.Sprintf(format, a...))
		}
		line, err := stripComment(raw)
		if err != nil {
			return nil, fail("%v", err)
		}
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "["):
			array := strings.HasPrefix(line, "[[")
			name, ok := strings.CutPrefix(line, "[")
			name, ok2 := strings.CutSuffix(name, "]")
			if array {
				name, ok = strings.CutPrefix(name, "[")
				name, ok2 = strings.CutSuffix(name, "]")
			}
			name = strings.TrimSpace(name)
			if !ok || !ok2 || !tomlName.MatchString(name) {
				return nil, fail("table header %q", line)
			}
			if tables[name] || !array && f.all(name) != nil {
				return nil, fail("table %q defined twice, or as both a table and an array of tables", name)
			}
			t := &tomlTable{name: name, array: array, line: i + 1, keys: map[string]tomlValue{}}
			if parent, _, nested := cutLast(name, "."); nested {
				p := f.last(parent)
				if p == nil {
					return nil, fail("table %q before its parent %q", name, parent)
				}
				p.children = append(p.children, t)
			}
			if !array {
				tables[name] = true
			}
			f.tables = append(f.tables, t)
			cur = t
		default:
			k, v, ok := strings.Cut(line, "=")
			k = strings.TrimSpace(k)
			if !ok || !tomlKey.MatchString(k) {
				return nil, fail("want key = value with a bare key, got %q", line)
			}
			val, err := parseTOMLValue(strings.TrimSpace(v))
			if err != nil {
				return nil, fail("%s: %v", k, err)
			}
			if _, dup := cur.keys[k]; dup {
				return nil, fail("%s set twice", k)
			}
			cur.keys[k] = val
		}
	}
	return f, nil
}

// stripComment cuts a line's comment, minding strings.
func stripComment(line string) (string, error) {
	var quote byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote == '"' && c == '\\':
			i++
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			if strings.HasPrefix(line[i:], strings.Repeat(string(c), 3)) {
				return "", errors.New("multi-line strings are not supported")
			}
			quote = c
		case c == '#':
			return line[:i], nil
		}
	}
	if quote != 0 {
		return "", errors.New("string not closed on its line")
	}
	return line, nil
}

func parseTOMLValue(s string) (tomlValue, error) {
	switch {
	case s == "":
		return tomlValue{}, errors.New("no value")
	case s[0] == '"':
		u, err := strconv.Unquote(s)
		if err != nil {
			return tomlValue{}, fmt.Errorf("string %s: %v", s, err)
		}
		return tomlValue{kind: "string", str: u}, nil
	case s[0] == '\'':
		if len(s) < 2 || s[len(s)-1] != '\'' || strings.Contains(s[1:len(s)-1], "'") {
			return tomlValue{}, fmt.Errorf("literal string %s", s)
		}
		return tomlValue{kind: "string", str: s[1 : len(s)-1]}, nil
	case s == "true" || s == "false":
		return tomlValue{kind: "boolean", str: s}, nil
	case tomlInteger.MatchString(s):
		return tomlValue{kind: "integer", str: s}, nil
	case s[0] == '[':
		inner, ok := strings.CutSuffix(s[1:], "]")
		if !ok {
			return tomlValue{}, errors.New("arrays must close on their line")
		}
		v := tomlValue{kind: "array"}
		for _, e := range splitArray(inner) {
			e = strings.TrimSpace(e)
			if e == "" {
				continue // a trailing comma
			}
			if e[0] == '[' || e[0] == '{' {
				return tomlValue{}, errors.New("nested arrays and inline tables are not supported")
			}
			ev, err := parseTOMLValue(e)
			if err != nil {
				return tomlValue{}, err
			}
			v.list = append(v.list, ev)
		}
		return v, nil
	}
	return tomlValue{}, fmt.Errorf("%s: only strings, integers, booleans and one-line arrays are supported", s)
}

// splitArray splits an array's inside at the commas outside strings.
func splitArray(s string) []string {
	var out []string
	var quote byte
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote == '"' && c == '\\':
			i++
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == ',':
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// cutLast cuts s around the last sep.
func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}

// top is the file's top-level table.
func (f *tomlFile) top() *tomlTable { return f.tables[0] }

// table returns the [name] table, or nil.
func (f *tomlFile) table(name string) *tomlTable {
	for _, t := range f.tables {
		if t.name == name && !t.array {
			return t
		}
	}
	return nil
}

// mustTable returns the [name] table or fails the test.
func (f *tomlFile) mustTable(t *testing.T, name string) *tomlTable {
	t.Helper()
	tb := f.table(name)
	if tb == nil {
		t.Fatalf("%s: no [%s]", f.path, name)
	}
	return tb
}

// all returns every table named name: a [name] table or the elements of
// [[name]], wherever they are nested.
func (f *tomlFile) all(name string) []*tomlTable {
	var out []*tomlTable
	for _, t := range f.tables {
		if t.name == name {
			out = append(out, t)
		}
	}
	return out
}

// last returns the latest table named name, the one a [name.x] header
// nests under.
func (f *tomlFile) last(name string) *tomlTable {
	for i := len(f.tables) - 1; i >= 0; i-- {
		if f.tables[i].name == name {
			return f.tables[i]
		}
	}
	return nil
}

// sub returns the tables nested under t as [t.name.x] or [[t.name.x]].
func (t *tomlTable) sub(x string) []*tomlTable {
	var out []*tomlTable
	for _, c := range t.children {
		if c.name == t.name+"."+x {
			out = append(out, c)
		}
	}
	return out
}

// names returns t's keys, sorted.
func (t *tomlTable) names() []string {
	out := make([]string, 0, len(t.keys))
	for k := range t.keys {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (t *tomlTable) str(key string) (string, bool) {
	v, ok := t.keys[key]
	return v.str, ok && v.kind == "string"
}

func (t *tomlTable) integer(key string) (int, bool) {
	v, ok := t.keys[key]
	if !ok || v.kind != "integer" {
		return 0, false
	}
	n, err := strconv.Atoi(strings.ReplaceAll(v.str, "_", ""))
	return n, err == nil
}

func (t *tomlTable) strs(key string) ([]string, bool) {
	v, ok := t.keys[key]
	if !ok || v.kind != "array" {
		return nil, false
	}
	var out []string
	for _, e := range v.list {
		if e.kind != "string" {
			return nil, false
		}
		out = append(out, e.str)
	}
	return out, true
}

func (t *tomlTable) mustStr(tt *testing.T, key string) string {
	tt.Helper()
	v, ok := t.str(key)
	if !ok {
		tt.Fatalf("[%s] (line %d): no string %s", t.name, t.line, key)
	}
	return v
}

func (t *tomlTable) mustInt(tt *testing.T, key string) int {
	tt.Helper()
	v, ok := t.integer(key)
	if !ok {
		tt.Fatalf("[%s] (line %d): no integer %s", t.name, t.line, key)
	}
	return v
}
