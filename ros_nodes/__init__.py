"""ROS 2 nodes: inspection node, image source, results recorder (issue 6)."""
