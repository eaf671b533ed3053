"""The SimPy executor: charges time for plans on modelled links and devices."""
