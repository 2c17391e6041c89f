package node_test

import "github.com/controlfeed/controlfeed/artifact"

func artifactDir(dir string) artifact.Config { return artifact.Config{Dir: dir} }
