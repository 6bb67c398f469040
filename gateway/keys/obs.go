package keys

import (
	"encoding/json"
	"net"
	"strconv"
	"strings"
)

// ServiceName is the name of the OBS service entry OBSInstructions writes.
const ServiceName = "Lightspeed"

// obsService is one entry of the "services" array of OBS's
// plugin_config/rtmp-services/services.json, field names as OBS reads them.
type obsService struct {
	Name        string         `json:"name"`
	Protocol    string         `json:"protocol"`
	Common      bool           `json:"common"`
	Servers     []obsServer    `json:"servers"`
	Recommended obsRecommended `json:"recommended"`
}

type obsServer struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

type obsRecommended struct {
	Keyint          int    `json:"keyint"`
	Output          string `json:"output"`
	MaxAudioBitrate int    `json:"max audio bitrate"`
	MaxVideoBitrate int    `json:"max video bitrate"`
	Profile         string `json:"profile"`
	Bframes         int    `json:"bframes"`
}

// OBSInstructions returns the text the gateway prints once, when it creates
// the first key: the stream key and the OBS settings to paste. host is the
// name or address OBS connects to; FTL always uses port 8084, so a port in
// host is dropped.
func OBSInstructions(k Key, host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "" {
		host = "your.gateway.host"
	}
	// Only strings, numbers and booleans: encoding cannot fail.
	entry, _ := json.MarshalIndent(obsEntry(host), "    ", "  ")

	var b strings.Builder
	b.WriteString("Stream key for channel ")
	b.WriteString(strconv.FormatUint(uint64(k.Channel), 10))
	b.WriteString(" (keep it secret):\n\n    ")
	b.WriteString(k.String())
	b.WriteString(`

To stream from OBS (FTL is in OBS 30 and older; OBS 31 removed it):

  1. Quit OBS and open its services file:
       Windows: %APPDATA%\obs-studio\plugin_config\rtmp-services\services.json
       macOS:   ~/Library/Application Support/obs-studio/plugin_config/rtmp-services/services.json
       Linux:   ~/.config/obs-studio/plugin_config/rtmp-services/services.json
  2. Add this entry to its "services" array, with a comma between it and
     its neighbours (leave "format_version" as it is):

    `)
	b.Write(entry)
	b.WriteString(`

  3. Start OBS. Settings → Stream → Service: "` + ServiceName + `" (tick "Show all" if it
     is not listed), Server: ` + host + `, Stream Key: the key above.

OBS may replace services.json when it updates its service list; add the
entry again if the service disappears.
`)
	return b.String()
}

// obsEntry returns the services.json entry for an FTL server at host.
// "protocol" is what OBS 30 reads, "output" what older versions read.
func obsEntry(host string) obsService {
	return obsService{
		Name:     ServiceName,
		Protocol: "FTL",
		Common:   false,
		Servers:  []obsServer{{Name: host, URL: host}},
		Recommended: obsRecommended{
			// FTL cannot ask the encoder for a keyframe, so a viewer that
			// loses a packet for good recovers at the next one: keep
			// them a second apart.
			Keyint:          1,
			Output:          "ftl_output",
			MaxAudioBitrate: 160,
			MaxVideoBitrate: 8000,
			Profile:         "main",
			Bframes:         0,
		},
	}
}

// WHIPInstructions returns the text the gateway prints with
// OBSInstructions: the settings of OBS's WHIP output (OBS 30 and newer),
// where the stream key is the Bearer token. baseURL is the gateway's URL
// as publishers reach it, e.g. "https://live.example.com".
func WHIPInstructions(k Key, baseURL string) string {
	return "To stream from OBS 30 or newer (WHIP): Settings → Stream → Service: \"WHIP\",\n" +
		"  Server:       " + strings.TrimRight(baseURL, "/") + "/api/whip\n" +
		"  Bearer Token: the key above (" + k.String() + ")\n"
}
