"""The cluster endpoints under ``/api2/json``: version, nodes, cluster status and config, tasks (gathered by ``portal.urls``)."""

from cluster.api import config, ha, log, nodes, options, syslog, tasks
from portal.api.routing import api_path

urlpatterns = [
    api_path("", nodes.RootIndexView.as_view()),
    api_path("version", nodes.VersionView.as_view()),
    api_path("nodes", nodes.NodesView.as_view()),
    api_path("cluster/status", nodes.ClusterStatusView.as_view()),
    api_path("cluster/options", options.OptionsView.as_view()),
    api_path("cluster/log", log.ClusterLogView.as_view()),
    api_path("cluster/ha", ha.HAIndexView.as_view()),
    api_path("cluster/ha/resources", ha.HAResourcesView.as_view()),
    api_path("cluster/ha/resources/{sid}", ha.HAResourceView.as_view()),
    api_path("cluster/config", config.ConfigIndexView.as_view()),
    api_path("cluster/config/apiversion", config.ApiVersionView.as_view()),
    api_path("cluster/config/join", config.JoinView.as_view()),
    api_path("cluster/config/nodes", config.NodesView.as_view()),
    api_path("cluster/config/nodes/{node}", config.NodeView.as_view()),
    api_path("cluster/tasks", tasks.ClusterTasksView.as_view()),
    api_path("nodes/{node}/syslog", syslog.SyslogView.as_view()),
    api_path("nodes/{node}/journal", syslog.JournalView.as_view()),
    api_path("nodes/{node}/tasks", tasks.TaskListView.as_view()),
    api_path("nodes/{node}/tasks/{upid}", tasks.TaskView.as_view()),
    api_path("nodes/{node}/tasks/{upid}/status", tasks.TaskStatusView.as_view()),
    api_path("nodes/{node}/tasks/{upid}/log", tasks.TaskLogView.as_view()),
]
