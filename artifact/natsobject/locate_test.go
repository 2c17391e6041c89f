package natsobject_test

import (
	"testing"

	"github.com/controlfeed/controlfeed/artifact"
	"github.com/controlfeed/controlfeed/artifact/natsobject"
)

func TestLocate(t *testing.T) {
	for _, c := range []struct {
		cfg  artifact.NATSConfig
		want string
	}{
		{artifact.NATSConfig{}, natsobject.DefaultBucket},
		{artifact.NATSConfig{Bucket: "b1", URLs: []string{"nats://a:4222"}}, "b1"},
		{artifact.NATSConfig{Bucket: "b1", URLs: []string{"nats://b:4222", "nats://c:4222"}, Replicas: 3}, "b1"},
	} {
		if got := natsobject.Locate(c.cfg); got != c.want {
			t.Errorf("Locate(%+v) = %q, want %q", c.cfg, got, c.want)
		}
		got, err := artifact.Locate(natsobject.Name, artifact.Config{NATS: c.cfg})
		if err != nil || got != c.want {
			t.Errorf("artifact.Locate(%+v) = %q, %v, want %q", c.cfg, got, err, c.want)
		}
	}
}
