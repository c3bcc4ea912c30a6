package agentconfig

import (
	"reflect"
	"testing"
)

// FuzzParse: whatever a ConfigMap holds, Parse refuses it or returns a valid config that survives
// the trip through JSON (the form the agent gets) unchanged.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"agentName":"echo","namespace":"default"}`))
	f.Add([]byte("agentName: echo\nnamespace: default\ncontainers: [{name: app, intercepts: [{containerPort: 8080, protocol: TCP}]}]\n"))
	f.Add([]byte(`{"containers":[{"intercepts":[{"containerPortName":"http","containerPort":8080,"agentPort":9900}]}]}`))
	f.Add([]byte("- not: a map"))
	f.Add([]byte{0xff, 0xfe})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that does not validate: %v", err)
		}
		j, err := c.JSON()
		if err != nil {
			t.Fatalf("JSON of a parsed config: %v", err)
		}
		again, err := Parse(j)
		if err != nil {
			t.Fatalf("the config's own JSON does not parse: %v\n%s", err, j)
		}
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v", c, again)
		}
	})
}
