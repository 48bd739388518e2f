// Command lb-controller is the local test cluster's stand-in for a cloud load balancer.
//
// On a cloud, the cloud controller manager sees a Service of type LoadBalancer, provisions
// a balancer and writes its address into status.loadBalancer.ingress. A single-node
// cluster has no balancer to provision, so this controller writes the node's own address
// there instead. kube-proxy then routes <node IP>:<port> to the Service, exactly as it
// routes a cloud balancer's traffic, and `kubectl get svc` shows an EXTERNAL-IP, not
// <pending> forever. MetalLB does the same job, with real address pools, on bare metal.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "path to a kubeconfig with rights to update services/status")
	address := flag.String("address", "", "the IP to publish as every LoadBalancer Service's ingress")
	flag.Parse()
	if *address == "" {
		fmt.Fprintln(os.Stderr, "lb-controller: --address is required")
		os.Exit(2)
	}

	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		klog.Fatalf("reading kubeconfig: %v", err)
	}
	client := kubernetes.NewForConfigOrDie(config)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	factory := informers.NewSharedInformerFactory(client, 10*time.Minute)
	services := factory.Core().V1().Services()
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	enqueue := func(obj any) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			queue.Add(key)
		}
	}
	_, _ = services.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	})
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), services.Informer().HasSynced) {
		klog.Fatal("service cache never synced")
	}
	klog.Infof("lb-controller: publishing %s for every LoadBalancer Service", *address)

	go func() {
		<-ctx.Done()
		queue.ShutDown()
	}()
	for {
		key, shutdown := queue.Get()
		if shutdown {
			return
		}
		if err := reconcile(ctx, client, services.Lister(), key, *address); err != nil {
			klog.Errorf("%s: %v (will retry)", key, err)
			queue.AddRateLimited(key)
		} else {
			queue.Forget(key)
		}
		queue.Done(key)
	}
}

// reconcile makes one Service's published ingress match its type: the node address for a
// LoadBalancer, nothing for any other type (a Service changed back to ClusterIP must not
// keep advertising an address it no longer answers on).
func reconcile(ctx context.Context, client kubernetes.Interface, lister corev1listers.ServiceLister, key, address string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	service, err := lister.Services(namespace).Get(name)
	if err != nil {
		return nil // deleted since it was queued: nothing to publish
	}
	var want []corev1.LoadBalancerIngress
	if service.Spec.Type == corev1.ServiceTypeLoadBalancer {
		vip := corev1.LoadBalancerIPModeVIP
		want = []corev1.LoadBalancerIngress{{IP: address, IPMode: &vip}}
	}
	have := service.Status.LoadBalancer.Ingress
	if len(have) == len(want) && (len(want) == 0 || have[0].IP == want[0].IP) {
		return nil
	}
	updated := service.DeepCopy()
	updated.Status.LoadBalancer.Ingress = want
	_, err = client.CoreV1().Services(namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	if err == nil {
		klog.Infof("%s: ingress set to %v", key, want)
	}
	return err
}
