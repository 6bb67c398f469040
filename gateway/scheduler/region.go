package scheduler

import (
	"math"
	"net/http"
	"slices"
	"strings"
)

// Region is a Fly.io region: its code and the city its datacenter serves.
type Region struct {
	Code     string  // three lowercase letters, e.g. "ams"
	Name     string  // city, e.g. "Amsterdam"
	Lat, Lon float64 // city coordinates in degrees
}

// regions is the table of Fly.io regions, sorted by code. It is never
// modified; Regions hands out copies.
var regions = []Region{
	{"ams", "Amsterdam", 52.37, 4.90},
	{"arn", "Stockholm", 59.33, 18.07},
	{"atl", "Atlanta", 33.75, -84.39},
	{"bog", "Bogotá", 4.71, -74.07},
	{"bom", "Mumbai", 19.08, 72.88},
	{"bos", "Boston", 42.36, -71.06},
	{"cdg", "Paris", 48.86, 2.35},
	{"den", "Denver", 39.74, -104.99},
	{"dfw", "Dallas", 32.78, -96.80},
	{"ewr", "Secaucus NJ", 40.79, -74.06},
	{"eze", "Buenos Aires", -34.60, -58.38},
	{"fra", "Frankfurt", 50.11, 8.68},
	{"gdl", "Guadalajara", 20.66, -103.35},
	{"gig", "Rio de Janeiro", -22.91, -43.17},
	{"gru", "São Paulo", -23.55, -46.63},
	{"hkg", "Hong Kong", 22.32, 114.17},
	{"iad", "Ashburn VA", 39.04, -77.49},
	{"jnb", "Johannesburg", -26.20, 28.05},
	{"lax", "Los Angeles", 34.05, -118.24},
	{"lhr", "London", 51.51, -0.13},
	{"maa", "Chennai", 13.08, 80.27},
	{"mad", "Madrid", 40.42, -3.70},
	{"mia", "Miami", 25.76, -80.19},
	{"nrt", "Tokyo", 35.68, 139.69},
	{"ord", "Chicago", 41.88, -87.63},
	{"otp", "Bucharest", 44.43, 26.10},
	{"phx", "Phoenix", 33.45, -112.07},
	{"qro", "Querétaro", 20.59, -100.39},
	{"scl", "Santiago", -33.45, -70.67},
	{"sea", "Seattle", 47.61, -122.33},
	{"sin", "Singapore", 1.35, 103.82},
	{"sjc", "San Jose", 37.34, -121.89},
	{"syd", "Sydney", -33.87, 151.21},
	{"waw", "Warsaw", 52.23, 21.01},
	{"yul", "Montreal", 45.50, -73.57},
	{"yyz", "Toronto", 43.65, -79.38},
}

// Regions returns the table of Fly.io regions, sorted by code. The caller
// owns the returned slice.
func Regions() []Region {
	return slices.Clone(regions)
}

// LookupRegion returns the region with the given code, if the table has it.
func LookupRegion(code string) (Region, bool) {
	i, ok := slices.BinarySearchFunc(regions, code, func(r Region, code string) int {
		return strings.Compare(r.Code, code)
	})
	if !ok {
		return Region{}, false
	}
	return regions[i], true
}

// earthRadius is the mean radius of the Earth in kilometres.
const earthRadius = 6371.0

// Distance returns the great-circle distance in kilometres between the
// cities of regions a and b (haversine formula). ok is false when either
// code is not in the table.
func Distance(a, b string) (km float64, ok bool) {
	ra, okA := LookupRegion(a)
	rb, okB := LookupRegion(b)
	if !okA || !okB {
		return 0, false
	}
	return haversine(ra.Lat, ra.Lon, rb.Lat, rb.Lon), true
}

func haversine(lat1, lon1, lat2, lon2 float64) float64 {
	rad := func(deg float64) float64 { return deg * math.Pi / 180 }
	dLat := rad(lat2 - lat1)
	dLon := rad(lon2 - lon1)
	h := math.Sin(dLat/2)*math.Sin(dLat/2) +
		math.Cos(rad(lat1))*math.Cos(rad(lat2))*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * earthRadius * math.Asin(math.Sqrt(min(h, 1)))
}

// RegionFromRequest returns the viewer's region as r names it: the
// Fly-Region header (set by Fly's edge to the region that took the
// request), else the X-LS-Region header, else the region query parameter.
// The first of these that is present decides; its value is lowercased and
// must be three letters a–z, otherwise the result is "" (no region). The
// code is not checked against the region table: the scheduler treats an
// unknown region as its home region.
func RegionFromRequest(r *http.Request) string {
	v := r.Header.Get("Fly-Region")
	if v == "" {
		v = r.Header.Get("X-LS-Region")
	}
	if v == "" && r.URL != nil {
		v = r.URL.Query().Get("region")
	}
	v = strings.ToLower(strings.TrimSpace(v))
	if !validCode(v) {
		return ""
	}
	return v
}

// validCode reports whether s has the form of a region code: [a-z]{3}.
func validCode(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := range len(s) {
		if s[i] < 'a' || s[i] > 'z' {
			return false
		}
	}
	return true
}
