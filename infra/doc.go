// Package infra holds the Fly.io deployment files and the test that checks them against the gateway's and the function's settings.
package infra
