// Package deploy holds no code: its tests check the deployment files around
// it (Prometheus rules and their unit tests, the Grafana dashboard, the
// Kubernetes manifests) and those at the repository root (docker-compose.yml,
// the services' Dockerfiles, .dockerignore).
package deploy
