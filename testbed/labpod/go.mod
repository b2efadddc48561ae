module github.com/purelb-rs/testbed/labpod

go 1.26.8
