package main

// Every backend the controlfeed command can use, activated by blank import.
// This is the only file that imports backends; add new ones here.
import (
	_ "github.com/controlfeed/controlfeed/artifact/filestore"
	_ "github.com/controlfeed/controlfeed/artifact/natsobject"
	_ "github.com/controlfeed/controlfeed/feed/filesource"
	_ "github.com/controlfeed/controlfeed/feed/natsfeed"
	_ "github.com/controlfeed/controlfeed/feed/nop"
)
