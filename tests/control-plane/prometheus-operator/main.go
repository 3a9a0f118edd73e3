// crd-schemas writes kubeconform JSON schemas for the custom resources of CRD files,
// offline: one standalone, strict schema per served version, named as kubeconform's
// default template expects ({{ .ResourceKind }}{{ .KindSuffix }}.json, e.g.
// prometheusrule-monitoring-v1.json).
//
//	crd-schemas --out DIR CRD.yaml...
//
// Built and run by `tests/control-plane/build monitoring-schemas` on the CRDs of the
// prometheus-operator module this go.mod pins (example/prometheus-operator-crd/). Strict
// as tests/control-plane/schemas is for the apiserver's schemas: descriptions dropped,
// "additionalProperties": false on every object with "properties" (unless it has
// additionalProperties or x-kubernetes-preserve-unknown-fields), int-or-string as a
// string or an integer, apiVersion and kind as enums. Unlike there, an optional field is
// not nullable unless the CRD says `nullable: true`: the apiserver silently drops such a
// null (seen with a PodMonitor's `path: null`), so a chart rendering one has a bug to show.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

func main() {
	out := flag.String("out", "", "directory to write the schemas to (its *.json files are replaced)")
	flag.Parse()
	if *out == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: crd-schemas --out DIR CRD.yaml...")
		os.Exit(2)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fail(err)
	}
	old, _ := filepath.Glob(filepath.Join(*out, "*.json"))
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			fail(err)
		}
	}
	n := 0
	for _, file := range flag.Args() {
		written, err := convertFile(file, *out)
		if err != nil {
			fail(fmt.Errorf("%s: %w", file, err))
		}
		n += written
	}
	fmt.Fprintf(os.Stderr, "crd-schemas: wrote %d schemas from %d CRDs to %s\n", n, flag.NArg(), *out)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "crd-schemas:", err)
	os.Exit(1)
}

type crd struct {
	Kind string `json:"kind"`
	Spec struct {
		Group string `json:"group"`
		Names struct {
			Kind string `json:"kind"`
		} `json:"names"`
		Versions []struct {
			Name   string `json:"name"`
			Served bool   `json:"served"`
			Schema struct {
				OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
			} `json:"schema"`
		} `json:"versions"`
	} `json:"spec"`
}

func convertFile(file, out string) (int, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	var c crd
	if err := yaml.Unmarshal(data, &c); err != nil {
		return 0, err
	}
	if c.Kind != "CustomResourceDefinition" || c.Spec.Group == "" || c.Spec.Names.Kind == "" {
		return 0, fmt.Errorf("not a CustomResourceDefinition with a group and a kind")
	}
	n := 0
	for _, v := range c.Spec.Versions {
		if !v.Served {
			continue
		}
		if v.Schema.OpenAPIV3Schema == nil {
			return n, fmt.Errorf("version %s has no openAPIV3Schema", v.Name)
		}
		schema := strict(v.Schema.OpenAPIV3Schema).(map[string]any)
		props, _ := schema["properties"].(map[string]any)
		if props == nil {
			props = map[string]any{}
			schema["properties"] = props
			schema["additionalProperties"] = false
		}
		props["apiVersion"] = map[string]any{"type": "string", "enum": []any{c.Spec.Group + "/" + v.Name}}
		props["kind"] = map[string]any{"type": "string", "enum": []any{c.Spec.Names.Kind}}
		schema["required"] = union(schema["required"], "apiVersion", "kind")
		name := fmt.Sprintf("%s-%s-%s.json", strings.ToLower(c.Spec.Names.Kind),
			strings.ToLower(strings.SplitN(c.Spec.Group, ".", 2)[0]), strings.ToLower(v.Name))
		body, err := json.Marshal(schema)
		if err != nil {
			return n, err
		}
		if err := os.WriteFile(filepath.Join(out, name), append(body, '\n'), 0o644); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// Keywords whose value is one schema, a list of schemas, a map of schemas.
var (
	one  = map[string]bool{"items": true, "additionalProperties": true, "not": true}
	many = map[string]bool{"allOf": true, "anyOf": true, "oneOf": true}
	maps = map[string]bool{"properties": true, "patternProperties": true, "definitions": true}
)

// strict returns a copy of an OpenAPI v3 schema node as a strict JSON schema.
func strict(node any) any {
	m, ok := node.(map[string]any)
	if !ok {
		return node
	}
	if b, _ := m["x-kubernetes-int-or-string"].(bool); b {
		return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
	}
	out := map[string]any{}
	for k, v := range m {
		switch {
		case k == "description":
		case one[k]:
			out[k] = strict(v)
		case many[k]:
			list, _ := v.([]any)
			conv := make([]any, len(list))
			for i, s := range list {
				conv[i] = strict(s)
			}
			out[k] = conv
		case maps[k]:
			sub, _ := v.(map[string]any)
			conv := make(map[string]any, len(sub))
			for n, s := range sub {
				conv[n] = strict(s)
			}
			out[k] = conv
		default:
			out[k] = v
		}
	}
	if nullable, _ := m["nullable"].(bool); nullable {
		if t, ok := out["type"].(string); ok {
			out["type"] = []any{t, "null"}
		}
	}
	if _, has := out["properties"]; has {
		preserve, _ := m["x-kubernetes-preserve-unknown-fields"].(bool)
		if _, set := out["additionalProperties"]; !set && !preserve {
			out["additionalProperties"] = false
		}
	}
	return out
}

func union(list any, more ...string) []any {
	have, _ := list.([]any)
	out := append([]any{}, have...)
	for _, s := range more {
		found := false
		for _, h := range have {
			found = found || h == s
		}
		if !found {
			out = append(out, s)
		}
	}
	return out
}
