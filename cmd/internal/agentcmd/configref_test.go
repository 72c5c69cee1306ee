package agentcmd

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/meshca/meshca/internal/testkit"
)

// configReference is the configuration reference the tests hold the code to.
const configReference = "../../../docs/reference/config.md"

// TestConfigReference holds the agent's section of the configuration
// reference to agentConfig: a field in one and not in the other fails.
func TestConfigReference(t *testing.T) {
	code := testkit.ConfigFieldNames(agentConfig{})
	if !slices.Contains(code, "healthAddr") {
		t.Fatalf("ConfigFieldNames(agentConfig) = %v, want healthAddr among them", code)
	}
	doc := testkit.DocTableKeys(t, configReference, "Agent (`meshca agent`")
	testkit.SameNames(t, "config reference, agent", code, doc)
}

// persistentFlags are the flags every meshca command takes, registered on
// the parent command rather than on the agent's.
var persistentFlags = map[string]bool{"log-level": true, "log-format": true}

// TestConfigReferenceFlags holds the flag column of the agent's reference
// to the command: every flag named there is one of the command's, and every
// flag that sets a config field is named there.
func TestConfigReferenceFlags(t *testing.T) {
	data, err := os.ReadFile(configReference)
	if err != nil {
		t.Fatal(err)
	}
	section := string(data)
	if _, after, ok := strings.Cut(section, "## Agent ("); ok {
		section, _, _ = strings.Cut(after, "\n## ")
	} else {
		t.Fatal("no agent section")
	}
	documented := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.HasPrefix(strings.TrimSpace(cells[2]), "`--") {
			continue
		}
		documented[strings.Trim(strings.TrimSpace(cells[2]), "`-")] = true
	}
	cmd := New()
	for name := range documented {
		if cmd.Flags().Lookup(name) == nil && cmd.PersistentFlags().Lookup(name) == nil && !persistentFlags[name] {
			t.Errorf("the reference names --%s, which the agent does not have", name)
		}
	}
	var want []string
	for _, fl := range agentFlags {
		want = append(want, fl.name)
	}
	for _, fl := range agentIntFlags {
		want = append(want, fl.name)
	}
	for _, name := range append(want, "ttl") {
		if !documented[name] {
			t.Errorf("flag --%s sets a config field but the reference does not name it", name)
		}
	}
}
