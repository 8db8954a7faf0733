// Package v1alpha1 is the kiln.dev/v1alpha1 API: BuildConfig, a template and policy for
// building an image on Kubernetes, and Build, one run of it.
//
// +kubebuilder:object:generate=true
// +groupName=kiln.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the group and version of these types.
var GroupVersion = schema.GroupVersion{Group: "kiln.dev", Version: "v1alpha1"}

// AddToScheme adds these types to a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &BuildConfig{}, &BuildConfigList{}, &Build{}, &BuildList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
