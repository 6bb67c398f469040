package scheduler

import (
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func TestRegionTable(t *testing.T) {
	rs := Regions()
	if len(rs) < 35 {
		t.Fatalf("%d regions, want at least 35", len(rs))
	}
	if !slices.IsSortedFunc(rs, func(a, b Region) int { return strings.Compare(a.Code, b.Code) }) {
		t.Error("regions are not sorted by code")
	}
	for i, r := range rs {
		if !validCode(r.Code) {
			t.Errorf("region %q: code is not [a-z]{3}", r.Code)
		}
		if i > 0 && rs[i-1].Code == r.Code {
			t.Errorf("region %q listed twice", r.Code)
		}
		if r.Name == "" || math.Abs(r.Lat) > 90 || math.Abs(r.Lon) > 180 {
			t.Errorf("region %+v: bad name or coordinates", r)
		}
		got, ok := LookupRegion(r.Code)
		if !ok || got != r {
			t.Errorf("LookupRegion(%q) = %+v, %v; want %+v", r.Code, got, ok, r)
		}
	}

	rs[0].Code = "xxx"
	if Regions()[0].Code == "xxx" {
		t.Error("changing the slice Regions returned changed the table")
	}
}

func TestLookupRegion(t *testing.T) {
	for _, tt := range []struct {
		code, name string
		ok         bool
	}{
		{"ams", "Amsterdam", true},
		{"yyz", "Toronto", true},
		{"ewr", "Secaucus NJ", true},
		{"AMS", "", false}, // codes are lowercase
		{"zzz", "", false},
		{"", "", false},
	} {
		r, ok := LookupRegion(tt.code)
		if ok != tt.ok || r.Name != tt.name {
			t.Errorf("LookupRegion(%q) = %q, %v; want %q, %v", tt.code, r.Name, ok, tt.name, tt.ok)
		}
	}
}

func TestDistance(t *testing.T) {
	t.Run("is zero from a region to itself", func(t *testing.T) {
		for _, r := range Regions() {
			if km, ok := Distance(r.Code, r.Code); !ok || km != 0 {
				t.Errorf("Distance(%s, %s) = %v, %v; want 0", r.Code, r.Code, km, ok)
			}
		}
	})
	t.Run("is symmetric and positive between regions", func(t *testing.T) {
		rs := Regions()
		for _, a := range rs {
			for _, b := range rs {
				if a.Code == b.Code {
					continue
				}
				ab, _ := Distance(a.Code, b.Code)
				ba, _ := Distance(b.Code, a.Code)
				if ab != ba || ab <= 0 || ab > math.Pi*earthRadius {
					t.Errorf("Distance(%s, %s) = %v, reverse %v", a.Code, b.Code, ab, ba)
				}
			}
		}
	})
	for _, tt := range []struct {
		a, b string
		km   float64 // within 10%
	}{
		{"ams", "fra", 365},
		{"lhr", "cdg", 344},
		{"iad", "ewr", 340},
		{"sjc", "nrt", 8250},
		{"syd", "lhr", 16990},
	} {
		t.Run("is about "+tt.a+"–"+tt.b, func(t *testing.T) {
			km, ok := Distance(tt.a, tt.b)
			if !ok || math.Abs(km-tt.km) > tt.km/10 {
				t.Errorf("Distance(%s, %s) = %.0f km, %v; want ≈ %.0f km", tt.a, tt.b, km, ok, tt.km)
			}
		})
	}
	t.Run("is unknown for a region not in the table", func(t *testing.T) {
		for _, pair := range [][2]string{{"ams", "zzz"}, {"zzz", "ams"}, {"", ""}} {
			if _, ok := Distance(pair[0], pair[1]); ok {
				t.Errorf("Distance(%q, %q) ok, want unknown", pair[0], pair[1])
			}
		}
	})
}

func TestRegionFromRequest(t *testing.T) {
	tests := []struct {
		name     string
		fly, xls string // headers; "" means absent
		target   string
		want     string
	}{
		{name: "nothing is no region", target: "/", want: ""},
		{name: "Fly-Region comes first", fly: "ams", xls: "syd", target: "/?region=nrt", want: "ams"},
		{name: "X-LS-Region comes next", xls: "syd", target: "/?region=nrt", want: "syd"},
		{name: "the region query comes last", target: "/websocket?channel=77&region=nrt", want: "nrt"},
		{name: "the value is lowercased", xls: "SYD", target: "/", want: "syd"},
		{name: "surrounding spaces are ignored", fly: " fra ", target: "/", want: "fra"},
		{name: "a code not in the table passes", target: "/?region=zzz", want: "zzz"},
		{name: "too short is no region", target: "/?region=am", want: ""},
		{name: "too long is no region", target: "/?region=amsx", want: ""},
		{name: "digits are no region", xls: "a1s", target: "/", want: ""},
		{name: "non-ASCII is no region", target: "/?region=%C3%A4ms", want: ""},
		{name: "an invalid Fly-Region is not replaced by a lower source", fly: "ams!", xls: "syd", target: "/?region=nrt", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, tt.target, nil)
			if tt.fly != "" {
				r.Header.Set("Fly-Region", tt.fly)
			}
			if tt.xls != "" {
				r.Header.Set("X-LS-Region", tt.xls)
			}
			if got := RegionFromRequest(r); got != tt.want {
				t.Errorf("RegionFromRequest = %q, want %q", got, tt.want)
			}
		})
	}
}

// FuzzRegionFromRequest checks that whatever a client sends, the region is
// "" or three lowercase letters.
func FuzzRegionFromRequest(f *testing.F) {
	f.Add("ams", "", "")
	f.Add("", "SYD", "")
	f.Add("", "", "region=nrt")
	f.Add("\u212aam", "x", "region")
	f.Fuzz(func(t *testing.T, fly, xls, query string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header["Fly-Region"] = []string{fly}
		r.Header["X-Ls-Region"] = []string{xls}
		r.URL.RawQuery = query
		got := RegionFromRequest(r)
		if got != "" && !validCode(got) {
			t.Fatalf("RegionFromRequest = %q", got)
		}
	})
}
