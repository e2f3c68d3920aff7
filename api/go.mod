module github.com/rcm-platform/rcm/api

go 1.26.0
