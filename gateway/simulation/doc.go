// Package simulation is the fleet's multi-region simulation on one
// machine, in its test: network namespaces stand for regions around the
// gateway's site, the local provider starts real function processes in
// them, viewers in them name their region as Fly's edge would, and every
// region's relay path has its own delay. It shows what the fleet promises:
// a new region is served at once from the nearest one and then from its
// own function, a region's second function starts before its first is
// full, a killed function is replaced while its viewers come back, a
// restarted gateway adopts the functions that kept running, and idle
// functions stop.
//
//	go test -v ./gateway/simulation/
//
// It needs root (namespaces); with CI=true it fails rather than skip.
package simulation
